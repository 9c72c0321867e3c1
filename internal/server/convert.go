package server

import (
	"fmt"
	"hash/fnv"
	"sort"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/sched"
	"gpucloud/internal/topology"
)

// core is what the leader needs of the scheduler (internal/sched). The
// scheduler is pure: the leader feeds it what etcd says happened and
// writes back what it decides.
type core interface {
	SetQueues(qs []sched.Queue) error
	Submit(j sched.Job) error
	Cancel(id string) error
	Finish(id string, now time.Time) error
	Checkpoint(id string, now time.Time) error
	NodeDown(n topology.NodeID, now time.Time) []sched.Decision
	NodeUp(n topology.NodeID, now time.Time)
	Cordon(n topology.NodeID, on bool)
	Restore(j sched.Job, p sched.Placement, started time.Time) error
	Schedule(now time.Time) []sched.Decision
	PendingReason(id string) string
}

func schedJob(j *api.Job) sched.Job {
	sj := sched.Job{
		ID: j.Metadata.ID, Tenant: j.Metadata.Tenant, Queue: j.Spec.Queue,
		Replicas: j.Spec.Replicas, GPUsPerReplica: j.Spec.GPUsPerReplica, MinReplicas: j.Spec.MinReplicas,
		TPSize: j.Spec.TensorParallel, GPUModel: j.Spec.GPUModel,
		Priority: j.Spec.Priority, Preemptible: j.Spec.Preemptible,
		Runtime: time.Duration(j.Spec.EstimatedRuntime), CheckpointInterval: time.Duration(j.Spec.CheckpointInterval),
		Submitted: j.Status.SubmittedAt,
	}
	if l, err := topology.ParseLevel(j.Spec.Topology.Required); err == nil && j.Spec.Topology.Required != "" {
		sj.Required = l
	}
	if l, err := topology.ParseLevel(j.Spec.Topology.Preferred); err == nil && j.Spec.Topology.Preferred != "" {
		sj.Preferred = l
	}
	return sj
}

// schedQueues turns the stored queues into the scheduler's, with
// guarantees in GPUs of the fabric at hand: a QuotaRemainder queue gets
// what the other top-level quotas leave, and when the top-level quotas add
// up to more than the fabric (it shrank, or was never that big) they are
// scaled down in proportion, since the scheduler refuses promises the
// fabric cannot keep.
func schedQueues(qs []*api.Queue, total int) ([]sched.Queue, string) {
	out := make([]sched.Queue, 0, len(qs))
	sum := 0
	for _, q := range qs {
		if q.Spec.Parent == "" && !q.Spec.QuotaRemainder {
			sum += q.Spec.Quota
		}
	}
	var warn string
	scale := 1.0
	if sum > total {
		scale = float64(total) / float64(sum)
		warn = fmt.Sprintf("top-level quotas add up to %d GPUs, the fabric has %d: scaled down to fit", sum, total)
	}
	remainderGiven := false
	for _, q := range qs {
		sq := schedQueue(q)
		if q.Spec.Parent == "" {
			sq.Guaranteed = int(float64(sq.Guaranteed) * scale)
			if q.Spec.QuotaRemainder {
				if !remainderGiven {
					sq.Guaranteed = max(total-min(sum, total), 0)
					remainderGiven = true
				} else {
					warn = "several queues have quotaRemainder: only " + q.Metadata.Name + "'s first one gets it"
				}
			}
		}
		out = append(out, sq)
	}
	if fitChildren(out) && warn == "" {
		warn = "child queues' quotas add up to more than their parent's (scaled to fit the fabric): scaled down to fit"
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, warn
}

// fitChildren scales each family's guarantees down, from the top of the
// tree, until the children of every queue add up to no more than its own
// guarantee: the top-level ones were scaled to the fabric (or the
// remainder), and their children must follow by the same factor, or the
// scheduler refuses the tree. It reports whether it scaled anything.
func fitChildren(qs []sched.Queue) bool {
	idx := make(map[string]int, len(qs))
	kids := map[string][]int{}
	for i, q := range qs {
		idx[q.Name] = i
	}
	var roots []int
	for i, q := range qs {
		if _, ok := idx[q.Parent]; q.Parent == "" || !ok {
			roots = append(roots, i) // an unknown parent: the scheduler says so
		} else {
			kids[q.Parent] = append(kids[q.Parent], i)
		}
	}
	scaled := false
	seen := make([]bool, len(qs))
	var fit func(i int)
	fit = func(i int) {
		if seen[i] { // a cycle: the scheduler says so
			return
		}
		seen[i] = true
		sum := 0
		for _, c := range kids[qs[i].Name] {
			sum += qs[c].Guaranteed
		}
		if sum > qs[i].Guaranteed {
			scale := float64(qs[i].Guaranteed) / float64(sum)
			for _, c := range kids[qs[i].Name] {
				qs[c].Guaranteed = int(float64(qs[c].Guaranteed) * scale)
			}
			scaled = true
		}
		for _, c := range kids[qs[i].Name] {
			fit(c)
		}
	}
	for _, r := range roots {
		fit(r)
	}
	return scaled
}

func schedQueue(q *api.Queue) sched.Queue {
	b := -1
	if q.Spec.BorrowingLimit != nil {
		b = *q.Spec.BorrowingLimit
	}
	w := q.Spec.Weight
	if w == 0 {
		w = 1
	}
	return sched.Queue{Name: q.Metadata.Name, Parent: q.Spec.Parent, Guaranteed: q.Spec.Quota, BorrowLimit: b, Weight: w}
}

// apiPlacement writes a scheduler placement compactly, by node name.
func apiPlacement(f *topology.Fabric, p *sched.Placement) *api.Placement {
	nodes := make([]api.NodeGPUs, len(p.Nodes))
	gpus := 0
	leaves := map[string]bool{}
	for i, na := range p.Nodes {
		nodes[i] = api.NodeGPUs{Node: f.Nodes[na.Node].Name, GPUs: na.GPUs}
		gpus += popcount(na.GPUs)
		leaves[f.Domains[f.Nodes[na.Node].Leaf].Name] = true
	}
	names := make([]string, 0, len(leaves))
	for l := range leaves {
		names = append(names, l)
	}
	sort.Strings(names)
	return &api.Placement{
		Groups: api.CompactPlacement(nodes), Nodes: len(nodes), GPUs: gpus, Replicas: p.Replicas,
		Leaves: p.Leaves, MinLeaves: p.MinLeaves, LeafNames: topology.CompressHostlist(names),
	}
}

// schedPlacement reads a stored placement back onto the fabric.
func schedPlacement(f *topology.Fabric, p *api.Placement) (sched.Placement, error) {
	nodes, err := p.Expand()
	if err != nil {
		return sched.Placement{}, err
	}
	sp := sched.Placement{Replicas: p.Replicas, Leaves: p.Leaves, MinLeaves: p.MinLeaves}
	for _, n := range nodes {
		id, ok := f.NodeByName(n.Node)
		if !ok {
			return sched.Placement{}, fmt.Errorf("node %s is not in the fabric", n.Node)
		}
		sp.Nodes = append(sp.Nodes, sched.NodeAlloc{Node: id, GPUs: n.GPUs})
	}
	sort.Slice(sp.Nodes, func(i, j int) bool { return sp.Nodes[i].Node < sp.Nodes[j].Node })
	return sp, nil
}

func popcount(m uint64) int {
	n := 0
	for m != 0 {
		m &= m - 1
		n++
	}
	return n
}

// masterPort picks the rendezvous port of a job generation: spread over
// 20000-49999 so that two jobs whose rank 0 share a node rarely collide,
// and new per generation so a restart never meets its predecessor's
// lingering socket.
func masterPort(id string, gen int) int {
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%d", id, gen)
	return 20000 + int(h.Sum32()%30000)
}
