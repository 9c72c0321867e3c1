package sched

import (
	"fmt"
	"math/bits"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"gpucloud/internal/topology"
)

// fab describes a small test fabric: a cluster of blocks of leaves of
// nodes (blocks 0: leaves right under the cluster). Nodes are named n00,
// n01, ... in leaf order; NVLink > 1 joins that many consecutive nodes of
// a leaf into one NVLink domain (a GB200-like rack).
type fab struct {
	blocks, leaves, nodes, gpus int
	nvlink                      int
	model                       string
}

func (fb fab) build(t testing.TB) *topology.Fabric {
	t.Helper()
	b := topology.NewBuilder("test")
	model := fb.model
	if model == "" {
		model = "H100"
	}
	cls := b.AddClass(topology.NodeClass{Name: "c", GPUModel: model, GPUs: fb.gpus, Rails: fb.gpus, RailGbps: 400})
	root, err := b.AddDomain(topology.Domain{Name: "cluster", Level: topology.LevelCluster, Parent: topology.NoDomain, Switches: 1})
	if err != nil {
		t.Fatal(err)
	}
	parents := []topology.DomainID{root}
	if fb.blocks > 0 {
		parents = nil
		for i := range fb.blocks {
			d, err := b.AddDomain(topology.Domain{Name: fmt.Sprintf("block-%d", i), Level: topology.LevelBlock, Parent: root, Switches: 1})
			if err != nil {
				t.Fatal(err)
			}
			parents = append(parents, d)
		}
	}
	n, l := 0, 0
	width := 2
	if total := len(parents) * fb.leaves * fb.nodes; total > 100 {
		width = len(strconv.Itoa(total - 1))
	}
	for _, p := range parents {
		for range fb.leaves {
			leaf, err := b.AddDomain(topology.Domain{Name: fmt.Sprintf("leaf-%d", l), Level: topology.LevelLeaf, Parent: p, Switches: 1})
			if err != nil {
				t.Fatal(err)
			}
			l++
			var ids []topology.NodeID
			for range fb.nodes {
				id, err := b.AddNode(fmt.Sprintf("n%0*d", width, n), cls, leaf)
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
				n++
			}
			for i := 0; fb.nvlink > 1 && i < len(ids); i += fb.nvlink {
				if err := b.AddNVLinkDomain(fmt.Sprintf("rack-%d", ids[i]), ids[i:min(i+fb.nvlink, len(ids))]); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	f, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// jb builds jobs fluently: jb("a").gang(2, 8).prio(5).obj().
type jobBuilder struct{ j Job }

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func jb(id string) *jobBuilder {
	return &jobBuilder{Job{ID: id, Replicas: 1, GPUsPerReplica: 1, Preemptible: true, Submitted: t0}}
}

func (b *jobBuilder) gang(r, g int) *jobBuilder              { b.j.Replicas, b.j.GPUsPerReplica = r, g; return b }
func (b *jobBuilder) min(n int) *jobBuilder                  { b.j.MinReplicas = n; return b }
func (b *jobBuilder) tp(n int) *jobBuilder                   { b.j.TPSize = n; return b }
func (b *jobBuilder) queue(q string) *jobBuilder             { b.j.Queue = q; return b }
func (b *jobBuilder) tenant(t string) *jobBuilder            { b.j.Tenant = t; return b }
func (b *jobBuilder) prio(p int32) *jobBuilder               { b.j.Priority = p; return b }
func (b *jobBuilder) fixed() *jobBuilder                     { b.j.Preemptible = false; return b }
func (b *jobBuilder) runtime(d time.Duration) *jobBuilder    { b.j.Runtime = d; return b }
func (b *jobBuilder) ckpt(d time.Duration) *jobBuilder       { b.j.CheckpointInterval = d; return b }
func (b *jobBuilder) at(d time.Duration) *jobBuilder         { b.j.Submitted = t0.Add(d); return b }
func (b *jobBuilder) required(l topology.Level) *jobBuilder  { b.j.Required = l; return b }
func (b *jobBuilder) preferred(l topology.Level) *jobBuilder { b.j.Preferred = l; return b }
func (b *jobBuilder) model(m string) *jobBuilder             { b.j.GPUModel = m; return b }
func (b *jobBuilder) obj() Job                               { return b.j }

// dec is a decision with node names instead of IDs, for readable diffs.
type dec struct {
	Kind     string
	Job      string
	Replicas int    `json:",omitempty"`
	Nodes    string `json:",omitempty"` // "n00:0-7 n01:0-3"
	By       string `json:",omitempty"`
}

func place(id string, replicas int, nodes string) dec {
	return dec{Kind: "place", Job: id, Replicas: replicas, Nodes: nodes}
}
func grow(id string, replicas int, nodes string) dec {
	return dec{Kind: "grow", Job: id, Replicas: replicas, Nodes: nodes}
}
func shrink(id string, replicas int, nodes string) dec {
	return dec{Kind: "shrink", Job: id, Replicas: replicas, Nodes: nodes}
}
func preempt(id, by string) dec { return dec{Kind: "preempt", Job: id, By: by} }
func requeue(id string) dec     { return dec{Kind: "requeue", Job: id} }
func rejected(id string) dec    { return dec{Kind: "reject", Job: id} }

func named(f *topology.Fabric, ds []Decision) []dec {
	var out []dec
	for _, d := range ds {
		x := dec{Kind: d.Kind.String(), Job: d.Job, By: d.By}
		if d.Placement != nil {
			x.Replicas = d.Placement.Replicas
			x.Nodes = nodesString(f, d.Placement)
		}
		out = append(out, x)
	}
	return out
}

func nodesString(f *topology.Fabric, p *Placement) string {
	var parts []string
	for _, a := range p.Nodes {
		parts = append(parts, f.Nodes[a.Node].Name+":"+maskString(a.GPUs))
	}
	return strings.Join(parts, " ")
}

// maskString writes a GPU mask as ranges: 0-3,6.
func maskString(m uint64) string {
	var parts []string
	for m != 0 {
		lo := bits.TrailingZeros64(m)
		hi := lo
		for hi+1 < 64 && m&(1<<uint(hi+1)) != 0 {
			hi++
		}
		if lo == hi {
			parts = append(parts, strconv.Itoa(lo))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", lo, hi))
		}
		m &^= (1<<uint(hi+1) - 1) &^ (1<<uint(lo) - 1)
	}
	return strings.Join(parts, ",")
}

// step is one moment of a scenario: events at offset at, then (unless
// noCycle) a scheduling cycle. want is every decision of the step, NodeDown
// ones first.
type step struct {
	at      time.Duration
	queues  []Queue
	submit  []Job
	finish  []string
	cancel  []string
	ckpt    []string
	down    []string
	up      []string
	noCycle bool
	want    []dec
	// reasons maps a job to words its PendingReason must contain.
	reasons map[string]string
}

type scenario struct {
	name    string
	fab     fab
	cfg     Config
	queues  []Queue
	running []restored // restored before the first step
	steps   []step
}

// restored is a job already running at the start, on nodes written as in
// dec.Nodes, since start (an offset from t0, usually negative).
type restored struct {
	job   Job
	nodes string
	start time.Duration
}

func parsePlacement(t testing.TB, f *topology.Fabric, j Job, nodes string) Placement {
	t.Helper()
	var p Placement
	g := 0
	for _, part := range strings.Fields(nodes) {
		name, list, ok := strings.Cut(part, ":")
		id, found := f.NodeByName(name)
		if !ok || !found {
			t.Fatalf("bad node spec %q", part)
		}
		var mask uint64
		for _, r := range strings.Split(list, ",") {
			lo, hi, isRange := strings.Cut(r, "-")
			a, err1 := strconv.Atoi(lo)
			b := a
			var err2 error
			if isRange {
				b, err2 = strconv.Atoi(hi)
			}
			if err1 != nil || err2 != nil {
				t.Fatalf("bad GPU list %q", list)
			}
			for i := a; i <= b; i++ {
				mask |= 1 << uint(i)
			}
		}
		p.Nodes = append(p.Nodes, NodeAlloc{Node: id, GPUs: mask})
		g += bits.OnesCount64(mask)
	}
	p.Replicas = g / j.GPUsPerReplica
	return p
}

func (sc scenario) run(t *testing.T) *Scheduler {
	t.Helper()
	f := sc.fab.build(t)
	s := New(f, sc.cfg)
	if sc.queues != nil {
		if err := s.SetQueues(sc.queues); err != nil {
			t.Fatalf("SetQueues: %v", err)
		}
	}
	for _, r := range sc.running {
		if err := s.Restore(r.job, parsePlacement(t, f, r.job, r.nodes), t0.Add(r.start)); err != nil {
			t.Fatalf("restore %s: %v", r.job.ID, err)
		}
	}
	for i, st := range sc.steps {
		now := t0.Add(st.at)
		if st.queues != nil {
			if err := s.SetQueues(st.queues); err != nil {
				t.Fatalf("step %d: SetQueues: %v", i, err)
			}
		}
		for _, j := range st.submit {
			if err := s.Submit(j); err != nil {
				t.Fatalf("step %d: submit %s: %v", i, j.ID, err)
			}
		}
		for _, id := range st.finish {
			if err := s.Finish(id, now); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
		for _, id := range st.cancel {
			if err := s.Cancel(id); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
		for _, id := range st.ckpt {
			if err := s.Checkpoint(id, now); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
		var got []Decision
		for _, n := range st.down {
			id, ok := f.NodeByName(n)
			if !ok {
				t.Fatalf("step %d: no node %s", i, n)
			}
			got = append(got, s.NodeDown(id, now)...)
		}
		for _, n := range st.up {
			id, _ := f.NodeByName(n)
			s.NodeUp(id, now)
		}
		if !st.noCycle {
			got = append(got, s.Schedule(now)...)
		}
		if d := cmp.Diff(st.want, named(f, got)); d != "" {
			t.Errorf("step %d (at %v): decisions (-want +got):\n%s", i, st.at, d)
		}
		for id, words := range st.reasons {
			if r := s.PendingReason(id); !strings.Contains(r, words) {
				t.Errorf("step %d: PendingReason(%s) = %q, want it to contain %q", i, id, r, words)
			}
		}
		if err := s.Check(); err != nil {
			t.Fatalf("step %d: invariants: %v", i, err)
		}
	}
	return s
}

func runScenarios(t *testing.T, scs []scenario) {
	for _, sc := range scs {
		t.Run(sc.name, func(t *testing.T) { sc.run(t) })
	}
}

// gpus lists GPU indices as a mask, for checks.
func gpus(idx ...int) uint64 {
	var m uint64
	for _, i := range idx {
		m |= 1 << uint(i)
	}
	return m
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
