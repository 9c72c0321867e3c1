package sched

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"gpucloud/internal/topology"
)

// op is one event of a random workload.
type op struct {
	kind string // submit, finish, cancel, ckpt, down, up, schedule
	job  Job
	id   string
	node topology.NodeID
	at   time.Duration
}

type world struct {
	fab    fab
	cfg    Config
	queues []Queue
	leaves []string // leaf queues jobs go to
}

func randomWorld(r *rand.Rand) world {
	w := world{fab: fab{blocks: r.IntN(3), leaves: 2 + r.IntN(3), nodes: 2 + r.IntN(4), gpus: []int{4, 8}[r.IntN(2)]}}
	if w.fab.gpus == 4 && r.IntN(2) == 0 {
		w.fab.nvlink = 2
	}
	policies := Policies()
	w.cfg = ConfigFor(policies[r.IntN(len(policies))])
	w.cfg.Spread = r.IntN(4) == 0
	w.cfg.MinRuntime = time.Duration(r.IntN(3)) * 5 * time.Minute
	w.cfg.FairShareHalfLife = time.Duration(r.IntN(2)) * time.Hour
	total := max(w.fab.blocks, 1) * w.fab.leaves * w.fab.nodes * w.fab.gpus
	if r.IntN(3) > 0 {
		g1 := total / 2
		w.queues = []Queue{
			{Name: "org1", Guaranteed: g1, BorrowLimit: -1, Weight: 1},
			{Name: "t1", Parent: "org1", Guaranteed: g1 / 2, BorrowLimit: r.IntN(total), Weight: 1},
			{Name: "t2", Parent: "org1", Guaranteed: g1 / 4, BorrowLimit: -1, Weight: 2},
			{Name: "org2", Guaranteed: total / 4, BorrowLimit: total / 2, Weight: 3},
		}
		w.leaves = []string{"t1", "t2", "org2"}
	} else {
		w.leaves = []string{""}
	}
	return w
}

// scheduler is a fresh scheduler of the world on fabric f.
func (w world) scheduler(t testing.TB, f *topology.Fabric) *Scheduler {
	t.Helper()
	s := New(f, w.cfg)
	if w.queues != nil {
		if err := s.SetQueues(w.queues); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func randomJob(r *rand.Rand, w world, id string, at time.Duration) Job {
	g := w.fab.gpus
	gpr := []int{1, 2, g / 2, g, g}[r.IntN(5)]
	reps := 1
	if gpr == g || r.IntN(3) == 0 {
		reps = 1 + r.IntN(2*w.fab.nodes)
	}
	j := Job{ID: id, Tenant: fmt.Sprint("tenant", r.IntN(3)), Queue: w.leaves[r.IntN(len(w.leaves))],
		Replicas: reps, GPUsPerReplica: gpr, Priority: int32(r.IntN(3)), Preemptible: r.IntN(4) > 0,
		Submitted: t0.Add(at)}
	if r.IntN(4) == 0 && reps > 1 {
		j.MinReplicas = 1 + r.IntN(reps)
	}
	if r.IntN(5) == 0 && gpr < g {
		j.TPSize = gpr * 2 // groups of two replicas in one NVLink domain
		if j.Replicas%2 != 0 {
			j.Replicas++
		}
		if j.MinReplicas%2 != 0 {
			j.MinReplicas++
		}
	}
	switch r.IntN(6) {
	case 0:
		j.Required = topology.LevelLeaf
	case 1:
		j.Preferred = topology.LevelLeaf
	case 2:
		j.Required = topology.LevelBlock
	}
	if r.IntN(2) == 0 {
		j.Runtime = time.Duration(1+r.IntN(120)) * time.Minute
	}
	if r.IntN(2) == 0 {
		j.CheckpointInterval = time.Duration(5+r.IntN(30)) * time.Minute
	}
	return j
}

// runOps applies ops and returns every decision, checking the invariants
// after each event.
func runOps(t *testing.T, f *topology.Fabric, w world, ops []op) []Decision {
	t.Helper()
	s := w.scheduler(t, f)
	var log []Decision
	for i, o := range ops {
		ds, err := applyOp(s, o)
		if err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
		if o.kind == "schedule" {
			checkDecisions(t, s, ds)
		}
		log = append(log, ds...)
		if err := s.Check(); err != nil {
			t.Fatalf("op %d (%s %s): %v", i, o.kind, o.id+o.job.ID, err)
		}
	}
	return log
}

// applyOp applies one event to s: the decisions it gave, and the error of
// a finish, cancel or checkpoint (invalid random submissions are refused,
// which is fine).
func applyOp(s *Scheduler, o op) ([]Decision, error) {
	now := t0.Add(o.at)
	switch o.kind {
	case "submit":
		_ = s.Submit(o.job)
	case "finish":
		return nil, s.Finish(o.id, now)
	case "cancel":
		return nil, s.Cancel(o.id)
	case "ckpt":
		return nil, s.Checkpoint(o.id, now)
	case "down":
		return s.NodeDown(o.node, now), nil
	case "up":
		s.NodeUp(o.node, now)
	case "schedule":
		return s.Schedule(now), nil
	}
	return nil, nil
}

// checkDecisions verifies what a cycle says against the snapshot.
func checkDecisions(t *testing.T, s *Scheduler, ds []Decision) {
	t.Helper()
	for _, d := range ds {
		switch d.Kind {
		case Place, Grow:
			j, _ := s.Job(d.Job)
			p := d.Placement
			if p.Replicas > j.Replicas || p.Replicas < max(j.MinReplicas, 1) && j.MinReplicas > 0 || (j.MinReplicas == 0 && p.Replicas != j.Replicas) {
				t.Fatalf("%s %s: %d replicas for a job of %d (min %d)", d.Kind, d.Job, p.Replicas, j.Replicas, j.MinReplicas)
			}
			if p.Leaves < p.MinLeaves && p.Leaves > 0 {
				t.Fatalf("%s %s: %d leaves, fewer than the minimum %d", d.Kind, d.Job, p.Leaves, p.MinLeaves)
			}
		case Preempt:
			if d.By == "" {
				t.Fatalf("preempt %s by nobody", d.Job)
			}
		}
	}
}

// generate runs a random workload on a reference scheduler and records it,
// so finishes and cancels name jobs that exist.
func generate(t *testing.T, seed uint64, n int) (world, *topology.Fabric, []op) {
	r := rand.New(rand.NewPCG(seed, 7))
	w := randomWorld(r)
	f := w.fab.build(t)
	s := w.scheduler(t, f)
	var ops []op
	at := time.Duration(0)
	next := 0
	for len(ops) < n {
		at += time.Duration(r.IntN(20)) * time.Minute
		now := t0.Add(at)
		var o op
		running := s.Running()
		switch k := r.IntN(20); {
		case k < 8:
			o = op{kind: "submit", job: randomJob(r, w, fmt.Sprintf("j%03d", next), at)}
			next++
			_ = s.Submit(o.job)
		case k < 12 && len(running) > 0:
			o = op{kind: "finish", id: running[r.IntN(len(running))]}
			_ = s.Finish(o.id, now)
		case k < 13 && len(running) > 0:
			o = op{kind: "cancel", id: running[r.IntN(len(running))]}
			_ = s.Cancel(o.id)
		case k < 14 && len(running) > 0:
			o = op{kind: "ckpt", id: running[r.IntN(len(running))]}
			_ = s.Checkpoint(o.id, now)
		case k < 15:
			o = op{kind: "down", node: topology.NodeID(r.IntN(len(f.Nodes)))}
			s.NodeDown(o.node, now)
		case k < 16:
			o = op{kind: "up", node: topology.NodeID(r.IntN(len(f.Nodes)))}
			s.NodeUp(o.node, now)
		default:
			o = op{kind: "schedule"}
			s.Schedule(now)
		}
		o.at = at
		ops = append(ops, o)
	}
	return w, f, ops
}

// TestPropertiesRandomWorkloads: over random fabrics, policies, queue
// trees and event streams, no GPU is held twice, gangs are whole, quotas
// hold (Check after every event), and the decisions are the same when
// simultaneous submissions arrive in another order and when the queue
// list is shuffled.
func TestPropertiesRandomWorkloads(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 8
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			w, f, ops := generate(t, seed, 400)
			want := runOps(t, f, w, ops)
			places := 0
			for _, d := range want {
				if d.Kind == Place {
					places++
				}
			}
			if places == 0 {
				t.Fatalf("nothing placed in %d events: the workload tests nothing", len(ops))
			}
			// Shuffle each run of submissions and the queue list.
			r := rand.New(rand.NewPCG(seed, 99))
			shuffled := append([]op(nil), ops...)
			for i := 0; i < len(shuffled); {
				k := i
				for k < len(shuffled) && shuffled[k].kind == "submit" {
					k++
				}
				if k > i+1 {
					r.Shuffle(k-i, func(a, b int) { shuffled[i+a], shuffled[i+b] = shuffled[i+b], shuffled[i+a] })
				}
				i = max(k, i+1)
			}
			w2 := w
			w2.queues = append([]Queue(nil), w.queues...)
			r.Shuffle(len(w2.queues), func(a, b int) { w2.queues[a], w2.queues[b] = w2.queues[b], w2.queues[a] })
			got := runOps(t, f, w2, shuffled)
			if d := cmp.Diff(want, got); d != "" {
				t.Fatalf("decisions differ with shuffled inputs (-first +shuffled):\n%s", d)
			}
		})
	}
}

// TestCloneDecidesTheSame: a clone taken mid-run makes the same decisions
// as the original from there on.
func TestCloneDecidesTheSame(t *testing.T) {
	w, f, ops := generate(t, 3, 300)
	s := w.scheduler(t, f)
	var c *Scheduler
	var a, b []Decision
	for i, o := range ops {
		for k, x := range []*Scheduler{s, c} {
			if x == nil {
				continue
			}
			ds, _ := applyOp(x, o)
			if k == 0 && c != nil {
				a = append(a, ds...)
			} else if k == 1 {
				b = append(b, ds...)
			}
		}
		if i == len(ops)/3 {
			c = s.Clone()
			if err := c.Check(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(a) == 0 {
		t.Fatal("no decisions after the clone")
	}
	if d := cmp.Diff(a, b); d != "" {
		t.Fatalf("clone decides differently (-original +clone):\n%s", d)
	}
}
