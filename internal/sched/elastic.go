package sched

import (
	"cmp"
	"fmt"
	"math/bits"
	"slices"
	"time"

	"gpucloud/internal/topology"
)

// NodeDown takes a failed or cordoned node out of service. Every gang with
// GPUs on it is requeued whole (it keeps its place in line), or, if it is
// elastic and keeps at least MinReplicas in whole tensor-parallel groups,
// shrinks to the replicas on healthy nodes. Decisions come in job ID order.
func (s *Scheduler) NodeDown(n topology.NodeID, now time.Time) []Decision {
	if n < 0 || int(n) >= len(s.t.f.Nodes) {
		return nil
	}
	s.advance(now)
	if s.out[n]&outDown != 0 {
		return nil
	}
	s.setOut(n, outDown, true)
	js := slices.Clone(s.nodeJobs[n])
	slices.SortFunc(js, func(a, b *job) int { return cmp.Compare(a.spec.ID, b.spec.ID) })
	reason := fmt.Sprintf("node %s down", s.t.f.Nodes[n].Name)
	var out []Decision
	for _, j := range js {
		if p := s.withoutNode(j, n); p != nil {
			s.resize(j, p)
			out = append(out, Decision{Kind: Shrink, Job: j.spec.ID, Placement: clonePlacement(p), Reason: reason})
			continue
		}
		s.unplace(j)
		s.requeue(j)
		out = append(out, Decision{Kind: Requeue, Job: j.spec.ID, Reason: reason})
	}
	return out
}

// NodeUp puts a repaired node back in service; the next Schedule may use it
// and grow elastic jobs that shrank.
func (s *Scheduler) NodeUp(n topology.NodeID, now time.Time) {
	if n < 0 || int(n) >= len(s.t.f.Nodes) {
		return
	}
	s.advance(now)
	s.setOut(n, outDown, false)
}

// Cordon takes node n out of placement (on) or puts it back, leaving the
// gangs running on it alone: an operator's cordon, or the first step of a
// drain. A node that is also down stays out until NodeUp.
func (s *Scheduler) Cordon(n topology.NodeID, on bool) {
	if n < 0 || int(n) >= len(s.t.f.Nodes) {
		return
	}
	s.setOut(n, outCordoned, on)
}

const (
	outDown uint8 = 1 << iota
	outCordoned
)

// setOut sets or clears one reason for node n to be out of service and
// cordons the view while any reason holds.
func (s *Scheduler) setOut(n topology.NodeID, reason uint8, on bool) {
	was := s.out[n] != 0
	if on {
		s.out[n] |= reason
	} else {
		s.out[n] &^= reason
	}
	if is := s.out[n] != 0; is != was {
		s.dropReservation()
		s.v.cordon(n, is)
	}
}

// withoutNode is j's placement minus every tensor-parallel group with a
// replica on node n, or nil when j is not elastic or would fall below
// MinReplicas. Replica r is the r-th run of GPUsPerReplica GPUs counted
// across the nodes in order.
func (s *Scheduler) withoutNode(j *job, n topology.NodeID) *Placement {
	if !j.elastic() {
		return nil
	}
	gpr, m := j.spec.GPUsPerReplica, j.m
	bad := map[int]bool{}
	r := 0
	for _, a := range j.pl.Nodes {
		c := bits.OnesCount64(a.GPUs) / gpr
		if a.Node == n {
			for i := r; i < r+c; i++ {
				bad[i/m] = true
			}
		}
		r += c
	}
	keep := r - len(bad)*m
	if keep < j.minReplicas() {
		return nil
	}
	p := &Placement{Replicas: keep}
	r = 0
	for _, a := range j.pl.Nodes {
		var mask uint64
		rest := a.GPUs
		for rest != 0 {
			var chunk uint64
			for range gpr {
				b := rest & -rest
				chunk |= b
				rest &^= b
			}
			if !bad[r/m] {
				mask |= chunk
			}
			r++
		}
		if mask != 0 {
			p.Nodes = append(p.Nodes, NodeAlloc{a.Node, mask})
		}
	}
	s.fillLocality(j, p)
	return p
}

func (s *Scheduler) fillLocality(j *job, p *Placement) {
	var leaves []topology.DomainID
	for _, a := range p.Nodes {
		leaves = append(leaves, s.t.f.Nodes[a.Node].Leaf)
	}
	slices.Sort(leaves)
	p.Leaves = len(slices.Compact(leaves))
	p.MinLeaves = s.t.minLeavesEmpty(int(s.t.nodePool[p.Nodes[0].Node]), j.spec.GPUsPerReplica, p.Replicas, j.m)
}

// resize moves a running job to placement p, a subset or a superset of its
// own: GPUs, node index and usage follow.
func (s *Scheduler) resize(j *job, p *Placement) {
	old := map[topology.NodeID]uint64{}
	for _, a := range j.pl.Nodes {
		old[a.Node] = a.GPUs
	}
	now := map[topology.NodeID]uint64{}
	for _, a := range p.Nodes {
		now[a.Node] = a.GPUs
	}
	s.onResize(j, old, p)
	for _, a := range j.pl.Nodes {
		if gone := a.GPUs &^ now[a.Node]; gone != 0 {
			_ = s.v.release(a.Node, gone)
		}
		if now[a.Node] == 0 {
			l := s.nodeJobs[a.Node]
			if i := slices.Index(l, j); i >= 0 {
				s.nodeJobs[a.Node] = slices.Delete(l, i, i+1)
			}
		}
	}
	for _, a := range p.Nodes {
		if add := a.GPUs &^ old[a.Node]; add != 0 {
			if err := s.v.alloc(a.Node, add); err != nil {
				panic(fmt.Sprintf("sched: growing %s onto GPUs that are not free: %v", j.spec.ID, err)) // a bug, never input
			}
		}
		if old[a.Node] == 0 {
			s.nodeJobs[a.Node] = append(s.nodeJobs[a.Node], j)
		}
	}
	// attained service accrues at the old size until now
	j.attained = j.attainedAt(s.now)
	j.runSince = s.now
	g := placementGPUs(p)
	charge(j, int64(g-j.gpus), j.model)
	j.gpus = g
	j.pl = p
	s.trackShrunk(j)
}

// grow gives elastic jobs running below their size the replicas they lack,
// near the replicas they have: inside the smallest domain around them
// that has room (never past their required level), highest priority
// first. With a reservation in force, growth stays outside it.
func (c *cycle) grow() {
	s := c.s
	if len(s.shrunk) == 0 {
		return
	}
	js := make([]*job, 0, len(s.shrunk))
	for j := range s.shrunk {
		js = append(js, j)
	}
	slices.SortFunc(js, func(a, b *job) int {
		if a.spec.Priority != b.spec.Priority {
			return cmp.Compare(b.spec.Priority, a.spec.Priority)
		}
		if x := a.spec.Submitted.Compare(b.spec.Submitted); x != 0 {
			return x
		}
		return cmp.Compare(a.spec.ID, b.spec.ID)
	})
	v := s.v
	if c.head != nil {
		if v = c.holdView(); v == nil {
			return
		}
	}
	for _, j := range js {
		room, _ := quotaRoom(j)
		want := min(j.spec.Replicas-j.pl.Replicas, room) / j.m * j.m
		if want < j.m {
			continue
		}
		add := c.findGrowth(v, j, want)
		if add == nil {
			continue
		}
		merged := &Placement{Replicas: j.pl.Replicas + add.Replicas}
		masks := map[topology.NodeID]uint64{}
		for _, a := range j.pl.Nodes {
			masks[a.Node] |= a.GPUs
		}
		for _, a := range add.Nodes {
			masks[a.Node] |= a.GPUs
		}
		for n, m := range masks {
			merged.Nodes = append(merged.Nodes, NodeAlloc{n, m})
		}
		slices.SortFunc(merged.Nodes, func(a, b NodeAlloc) int { return cmp.Compare(a.Node, b.Node) })
		s.fillLocality(j, merged)
		s.resize(j, merged)
		c.placed++
		c.out = append(c.out, Decision{Kind: Grow, Job: j.spec.ID, Placement: clonePlacement(merged)})
	}
}

func (c *cycle) findGrowth(v *view, j *job, want int) *Placement {
	s := c.s
	first := j.pl.Nodes[0].Node
	var places []request
	if j.sc.node {
		rq := j.request(want)
		rq.node = first
		places = append(places, rq)
	} else {
		rq := j.request(want)
		for _, l := range s.pl.levelsFor(&rq) {
			r := j.request(want)
			r.within = s.t.within(first, l)
			places = append(places, r)
		}
	}
	for _, rq := range places {
		if p := c.largest(v, rq, j.m, want); p != nil {
			return p
		}
	}
	return nil
}

// largest finds the most replicas, up to want in steps of m, that fit rq's
// place.
func (c *cycle) largest(v *view, rq request, m, want int) *Placement {
	rq.n = want
	if p, _ := c.s.pl.place(v, &rq); p != nil {
		return p
	}
	var best *Placement
	a, b := 1, want/m-1
	for a <= b {
		mid := (a + b) / 2
		rq.n = mid * m
		if p, _ := c.s.pl.place(v, &rq); p != nil {
			best, a = p, mid+1
		} else {
			b = mid - 1
		}
	}
	return best
}
