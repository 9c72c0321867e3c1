package sched

import (
	"cmp"
	"fmt"
	"math/bits"
	"slices"

	"gpucloud/internal/topology"
)

// Check verifies the snapshot's invariants and returns the first broken
// one: no GPU held twice, the allocation state equal to the union of the
// running placements, every gang whole (GPUsPerReplica times its replicas,
// between MinReplicas and Replicas), the indexes equal to a rebuild, and
// queue usage equal to the running jobs below each queue and within its
// limit (jobs restored after a restart excepted). Tests and the simulator
// call it; it costs a pass over the fleet.
func (s *Scheduler) Check() error {
	f := s.t.f
	used := make([]uint64, len(f.Nodes))
	run := slices.Clone(s.run)
	slices.SortFunc(run, func(a, b *job) int { return cmp.Compare(a.spec.ID, b.spec.ID) })
	if len(s.run)+len(s.pend) != len(s.jobs) {
		return fmt.Errorf("%d running and %d pending jobs, %d known", len(s.run), len(s.pend), len(s.jobs))
	}
	cur := map[*queue]int64{}
	for _, j := range run {
		id := j.spec.ID
		if j.state != stateRunning || j.pl == nil || s.jobs[id] != j {
			return fmt.Errorf("job %s: on the running list but not running", id)
		}
		gpr := j.spec.GPUsPerReplica
		g := 0
		for i, a := range j.pl.Nodes {
			if i > 0 && j.pl.Nodes[i-1].Node >= a.Node {
				return fmt.Errorf("job %s: placement nodes not sorted", id)
			}
			if used[a.Node]&a.GPUs != 0 {
				return fmt.Errorf("job %s: GPUs %#x of node %s allocated twice", id, used[a.Node]&a.GPUs, f.Nodes[a.Node].Name)
			}
			used[a.Node] |= a.GPUs
			c := bits.OnesCount64(a.GPUs)
			if c == 0 || c%gpr != 0 {
				return fmt.Errorf("job %s: %d GPUs on node %s are not whole replicas of %d", id, c, f.Nodes[a.Node].Name, gpr)
			}
			if !slices.Contains(s.nodeJobs[a.Node], j) {
				return fmt.Errorf("job %s: missing from the index of node %s", id, f.Nodes[a.Node].Name)
			}
			g += c
		}
		r := j.pl.Replicas
		if g != r*gpr || g != j.gpus {
			return fmt.Errorf("job %s: gang not whole: %d GPUs for %d replicas of %d (accounted %d)", id, g, r, gpr, j.gpus)
		}
		if r < j.minReplicas() || r > j.spec.Replicas || r%j.m != 0 {
			return fmt.Errorf("job %s: %d replicas outside %d..%d in groups of %d", id, r, j.minReplicas(), j.spec.Replicas, j.m)
		}
		for a := j.leaf; a != nil; a = a.parent {
			cur[a] += int64(g)
		}
	}
	if err := s.checkEnds(); err != nil {
		return err
	}
	if err := s.checkHold(); err != nil {
		return err
	}
	if err := s.checkPendIndex(); err != nil {
		return err
	}
	for _, j := range s.pend {
		if j.state != statePending || s.jobs[j.spec.ID] != j {
			return fmt.Errorf("job %s: on the pending list but not pending", j.spec.ID)
		}
	}
	for n := range f.Nodes {
		want := fullMask(f.NodeGPUs(topology.NodeID(n))) &^ used[n]
		if got := s.v.st.FreeMask(topology.NodeID(n)); got != want {
			return fmt.Errorf("node %s: free GPUs %#x, running jobs leave %#x", f.Nodes[n].Name, got, want)
		}
		for _, j := range s.nodeJobs[n] {
			if j.state != stateRunning {
				return fmt.Errorf("node %s: index lists job %s, which is not running", f.Nodes[n].Name, j.spec.ID)
			}
		}
	}
	if err := s.v.checkIndex(); err != nil {
		return err
	}
	for _, q := range s.qt.all {
		if q.cur != cur[q] {
			return fmt.Errorf("queue %s: usage %d, running jobs hold %d", q.spec.Name, q.cur, cur[q])
		}
		if q.limit >= 0 && q.cur-q.restored > q.limit {
			return fmt.Errorf("queue %s: uses %d GPUs, over its limit of %d", q.spec.Name, q.cur, q.limit)
		}
	}
	return nil
}

// checkIndex compares the incremental indexes with a rebuild.
func (v *view) checkIndex() error {
	fresh := newView(v.t, v.st)
	for p := range v.t.pools {
		if !slices.Equal(v.idle[p], fresh.idle[p]) {
			return fmt.Errorf("index: idle nodes per domain drifted (pool %d)", p)
		}
		if !slices.Equal(v.freeG[p], fresh.freeG[p]) {
			return fmt.Errorf("index: free GPUs per domain drifted (pool %d)", p)
		}
		if !slices.Equal(v.hist[p], fresh.hist[p]) {
			return fmt.Errorf("index: leaf histograms drifted (pool %d)", p)
		}
		for c := range v.bucket[p] {
			if !slices.Equal(v.bucket[p][c].words, fresh.bucket[p][c].words) || !slices.Equal(v.bucket[p][c].sum, fresh.bucket[p][c].sum) {
				return fmt.Errorf("index: nodes with %d free GPUs drifted (pool %d)", c+1, p)
			}
		}
	}
	for u := range 3 {
		for d := range v.t.f.Domains {
			if v.st.Capacity(topology.DomainID(d), topology.Unit(u)) != fresh.st.Capacity(topology.DomainID(d), topology.Unit(u)) {
				return fmt.Errorf("state capacity drifted")
			}
		}
	}
	return nil
}

// checkEnds compares the index of expected ends with the running jobs.
func (s *Scheduler) checkEnds() error {
	n := 0
	for _, j := range s.run {
		if j.spec.Runtime <= 0 {
			continue
		}
		n++
		if j.end != expectedEnd(j.started, j.spec.Runtime) {
			return fmt.Errorf("job %s: indexed end %d, start plus runtime is %d", j.spec.ID, j.end, expectedEnd(j.started, j.spec.Runtime))
		}
		if !s.ends.t.Has(j) {
			return fmt.Errorf("job %s: running with a runtime but missing from the end index", j.spec.ID)
		}
	}
	if s.ends.len() != n {
		return fmt.Errorf("end index holds %d jobs, %d running jobs have a runtime", s.ends.len(), n)
	}
	return nil
}

// checkPendIndex compares the ordered pending indexes (the flat one, or
// the tenants' lanes and the queues' counts) with the pending list.
func (s *Scheduler) checkPendIndex() error {
	n := 0
	for _, j := range s.pend {
		in := s.pendIdx.t.Has(j)
		if s.prof.fairShare {
			in = j.ten.pend.t.Has(j)
		}
		if !in {
			return fmt.Errorf("job %s: pending but missing from the ordered index", j.spec.ID)
		}
		if k := s.prof.order.key(s, j, s.now); k != j.key {
			return fmt.Errorf("job %s: order key %d, now %d: keys must not change while a job waits", j.spec.ID, j.key, k)
		}
	}
	if !s.prof.fairShare {
		n = s.pendIdx.t.Len()
	} else {
		want := map[*queue]int{}
		for _, j := range s.pend {
			for a := j.leaf; a != nil; a = a.parent {
				want[a]++
			}
		}
		for _, q := range s.qt.all {
			if q.npend != want[q] {
				return fmt.Errorf("queue %s: counts %d pending jobs below, there are %d", q.spec.Name, q.npend, want[q])
			}
			for _, t := range q.tenants {
				n += t.pend.t.Len()
			}
		}
	}
	if n != len(s.pend) {
		return fmt.Errorf("ordered index holds %d jobs, %d are pending", n, len(s.pend))
	}
	return nil
}
