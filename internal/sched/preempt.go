package sched

import (
	"cmp"
	"fmt"
	"math/bits"
	"slices"

	"gpucloud/internal/topology"
)

type evictMode uint8

const (
	modeReclaim evictMode = iota + 1
	modePreempt
)

// reclaimAction takes back guaranteed quota: a job whose queue path stays
// within its guarantees evicts preemptible jobs of queues that hold more
// than theirs, whatever their priority.
type reclaimAction struct{}

func (reclaimAction) name() string              { return "reclaim" }
func (reclaimAction) try(c *cycle, j *job) bool { return c.evict(j, modeReclaim) }

// preemptAction evicts preemptible jobs of the same leaf queue with a
// strictly lower rank (priority, or attained-service band for LAS).
type preemptAction struct{}

func (preemptAction) name() string              { return "preempt" }
func (preemptAction) try(c *cycle, j *job) bool { return c.evict(j, modePreempt) }

type evictKey struct {
	mode  evictMode
	shape shapeKey
	leaf  *queue
	rank  int64
}

type evictMemo struct {
	epoch  uint64
	placed int
}

type victim struct {
	j    *job
	cost float64
	rank int64
}

// evict makes room for j by preempting the cheapest set of victims: it
// picks the domains (or nodes) where the victims' GPUs and the free GPUs
// add up to the gang at the least estimated cost, then in each, releases
// victims cheapest first on the snapshot until j fits, gives back every
// victim that turns out not to be needed, and commits only if j is placed;
// otherwise everything is rolled back. Loop guards: victims have run at
// least MinRuntime, a preempted job may not preempt during PreemptBackoff,
// ranks must be strictly lower, and j is placed at once on the freed GPUs
// so no other job can take them.
func (c *cycle) evict(j *job, mode evictMode) bool {
	s := c.s
	if s.cfg.PreemptBackoff > 0 && !j.preemptedAt.IsZero() && c.now.Before(j.preemptedAt.Add(s.cfg.PreemptBackoff)) {
		j.wait = wait{code: wBackoff, t: j.preemptedAt}
		return false
	}
	lo := j.minReplicas()
	need := lo * j.spec.GPUsPerReplica
	if mode == modeReclaim && !inQuota(j, int64(need)) {
		return false
	}
	rank := s.prof.order.rank(s, j, c.now)
	key := evictKey{mode, j.shape(lo), j.leaf, rank}
	// A failed eviction fails again until capacity is released, or, when
	// MinRuntime is zero, until a job placed in this cycle adds a victim.
	if m, ok := c.evictFails[key]; ok && m.epoch == s.v.epoch && (m.placed == c.placed || s.cfg.MinRuntime > 0) {
		return false
	}
	if c.placeByEvicting(j, mode, rank, lo) {
		return true
	}
	if c.evictFails == nil {
		c.evictFails = map[evictKey]evictMemo{}
	}
	c.evictFails[key] = evictMemo{s.v.epoch, c.placed}
	return false
}

func (c *cycle) victims(j *job, mode evictMode, rank int64) []victim {
	s := c.s
	var out []victim
	consider := func(v *job) {
		if !v.spec.Preemptible || c.now.Before(v.started.Add(s.cfg.MinRuntime)) {
			return
		}
		if j.spec.GPUModel != "" && s.t.models[v.model] != j.spec.GPUModel {
			return
		}
		r := s.prof.order.rank(s, v, c.now)
		if mode == modePreempt && r >= rank {
			return
		}
		if mode == modeReclaim {
			if _, b := borrowing(v, j); !b {
				return
			}
		}
		out = append(out, victim{v, v.cost(c.now), r})
	}
	if mode == modePreempt {
		for _, v := range j.leaf.running {
			consider(v)
		}
	} else {
		for _, q := range s.qt.all {
			if q.leaf() && q != j.leaf {
				for _, v := range q.running {
					consider(v)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b victim) int {
		if a.cost != b.cost {
			return cmp.Compare(a.cost, b.cost)
		}
		if a.rank != b.rank {
			return cmp.Compare(a.rank, b.rank)
		}
		if a.j.gpus != b.j.gpus {
			return a.j.gpus - b.j.gpus
		}
		return cmp.Compare(a.j.spec.ID, b.j.spec.ID)
	})
	return out
}

// target is a node (level LevelNode) or a domain where victims are sought.
type target struct {
	id   int32
	cost float64
	vs   []victim
}

func (c *cycle) placeByEvicting(j *job, mode evictMode, rank int64, n int) bool {
	s := c.s
	vs := c.victims(j, mode, rank)
	if len(vs) == 0 {
		return false
	}
	free := 0
	for _, v := range vs {
		free += v.j.gpus
	}
	for p := range s.t.pools {
		if po := &s.t.pools[p]; (j.spec.GPUModel == "" || po.model == j.spec.GPUModel) && po.gpus >= j.spec.GPUsPerReplica {
			for _, r := range s.t.roots {
				free += int(s.v.freeG[p][r])
			}
		}
	}
	if free < n*j.spec.GPUsPerReplica {
		return false // not even every victim would make room
	}
	rq := j.request(n)
	need := n * j.spec.GPUsPerReplica
	var levels []topology.Level
	if need <= s.t.maxNodeGPUs {
		levels = append(levels, topology.LevelNode) // a job that fits one node needs only one node freed
	} else if !j.sc.node && !j.sc.nvlink {
		for _, l := range s.pl.levelsFor(&rq) {
			if s.levelHolds(l, j, n) {
				levels = append(levels, l)
			}
		}
	}
	for _, l := range levels {
		ts := c.targets(j, vs, l, need)
		for i := range min(len(ts), s.cfg.MaxPreemptTargets) {
			rq := j.request(n)
			if l == topology.LevelNode {
				rq.node = topology.NodeID(ts[i].id)
			} else {
				rq.within = topology.DomainID(ts[i].id)
			}
			if c.tryTarget(j, mode, &rq, ts[i].vs) {
				return true
			}
		}
	}
	return false
}

// levelHolds reports whether one domain of level l can hold n replicas of j
// on an empty fabric.
func (s *Scheduler) levelHolds(l topology.Level, j *job, n int) bool {
	return s.mostReplicasIn(l, j) >= n
}

// targets groups victims by the node or domain of level l their GPUs sit
// in, and orders the places by the estimated cost of freeing need GPUs
// there (free GPUs count first, then victims cheapest first).
func (c *cycle) targets(j *job, vs []victim, l topology.Level, need int) []target {
	s := c.s
	idx := map[int32]int{}
	var ts []target
	var inside []int // GPUs of each target's victims inside it
	for _, v := range vs {
		var last int32 = -1
		for _, a := range v.j.pl.Nodes {
			id := int32(a.Node)
			if l != topology.LevelNode {
				id = int32(s.t.within(a.Node, l))
			}
			i, ok := idx[id]
			if !ok {
				i = len(ts)
				idx[id] = i
				ts = append(ts, target{id: id})
				inside = append(inside, 0)
			}
			inside[i] += bits.OnesCount64(a.GPUs)
			if id != last {
				if k := len(ts[i].vs); k == 0 || ts[i].vs[k-1].j != v.j {
					ts[i].vs = append(ts[i].vs, v)
				}
				last = id
			}
		}
	}
	out := ts[:0]
	for i, t := range ts {
		free := c.freeIn(j, l, t.id)
		if free+inside[i] < need {
			continue
		}
		acc, cost := free, 0.0
		for _, v := range t.vs {
			if acc >= need {
				break
			}
			acc += gpusIn(s, v.j, l, t.id)
			cost += v.cost
		}
		t.cost = cost
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b target) int {
		if a.cost != b.cost {
			return cmp.Compare(a.cost, b.cost)
		}
		return cmp.Compare(a.id, b.id)
	})
	return out
}

func (c *cycle) freeIn(j *job, l topology.Level, id int32) int {
	s := c.s
	if l == topology.LevelNode {
		p := &s.t.pools[s.t.nodePool[id]]
		if (j.spec.GPUModel != "" && p.model != j.spec.GPUModel) || p.gpus < j.spec.GPUsPerReplica {
			return 0
		}
		f, _ := s.v.contrib(topology.NodeID(id))
		return f
	}
	free := 0
	for p := range s.t.pools {
		po := &s.t.pools[p]
		if (j.spec.GPUModel == "" || po.model == j.spec.GPUModel) && po.gpus >= j.spec.GPUsPerReplica {
			free += int(s.v.freeG[p][id])
		}
	}
	return free
}

func gpusIn(s *Scheduler, v *job, l topology.Level, id int32) int {
	g := 0
	for _, a := range v.pl.Nodes {
		if (l == topology.LevelNode && int32(a.Node) == id) || (l != topology.LevelNode && int32(s.t.within(a.Node, l)) == id) {
			g += bits.OnesCount64(a.GPUs)
		}
	}
	return g
}

// tryTarget simulates the eviction in one place and commits it or rolls
// it back.
func (c *cycle) tryTarget(j *job, mode evictMode, rq *request, vs []victim) bool {
	s := c.s
	lo := j.minReplicas()
	fits := func() *Placement {
		if hi, _ := quotaRoom(j); hi < lo || !s.pl.mayFit(s.v, rq) {
			return nil
		}
		p, _ := s.pl.place(s.v, rq)
		return p
	}
	var removed []*job
	ok := false
	for _, v := range vs {
		if mode == modeReclaim {
			if _, b := borrowing(v.j, j); !b {
				continue
			}
		}
		s.simRemove(v.j)
		removed = append(removed, v.j)
		if fits() != nil {
			ok = true
			break
		}
	}
	if !ok {
		for i := len(removed) - 1; i >= 0; i-- {
			s.simRestore(removed[i])
		}
		return false
	}
	// Give back what is not needed, most expensive first.
	for i := len(removed) - 2; i >= 0; i-- {
		s.simRestore(removed[i])
		if fits() == nil {
			s.simRemove(removed[i])
		} else {
			removed[i] = nil
		}
	}
	p := fits()
	removed = slices.DeleteFunc(removed, func(v *job) bool { return v == nil })
	slices.SortFunc(removed, func(a, b *job) int { return cmp.Compare(a.spec.ID, b.spec.ID) })
	for _, v := range removed {
		reason := c.evictReason(j, v, mode)
		s.detach(v)
		v.preemptedAt = c.now
		s.requeue(v)
		c.out = append(c.out, Decision{Kind: Preempt, Job: v.spec.ID, By: j.spec.ID, Reason: reason})
	}
	c.commit(j, p)
	return true
}

func (c *cycle) evictReason(j, v *job, mode evictMode) string {
	if mode == modeReclaim {
		q, _ := borrowing(v, j)
		name := v.leaf.spec.Name
		if q != nil {
			name = q.spec.Name
		}
		return fmt.Sprintf("reclaim: queue %s holds more than its guarantee; queue %s needs its own", name, j.leaf.spec.Name)
	}
	if c.s.prof.name == PolicyLAS {
		return fmt.Sprintf("least attained service: %.0f GPU-s attained against %.0f", v.attainedAt(c.now), j.attainedAt(c.now))
	}
	return fmt.Sprintf("priority %d below %d", v.spec.Priority, j.spec.Priority)
}

// simRemove releases a running job's GPUs and usage without taking it off
// its lists, for a what-if; simRestore undoes it.
func (s *Scheduler) simRemove(v *job) {
	s.v.releaseAll(v.pl.Nodes)
	charge(v, -int64(v.gpus), v.model)
}

func (s *Scheduler) simRestore(v *job) {
	if err := s.v.allocAll(v.pl.Nodes); err != nil {
		panic(fmt.Sprintf("sched: rollback of %s failed: %v", v.spec.ID, err)) // a bug, never input
	}
	charge(v, int64(v.gpus), v.model)
}
