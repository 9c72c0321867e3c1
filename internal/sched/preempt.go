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
	mode evictMode
	sid  int32 // the shape's number (Scheduler.shapeNo): a key without a string hashes several times faster
	leaf *queue
	rank int64
}

type evictMemo struct {
	epoch  uint64
	placed int
}

type victim struct {
	j    *job
	pl   *Placement // the placement it was a victim with
	cost float64
	rank int64
}

type victimKey struct {
	mode   evictMode
	leaf   *queue
	rank   int64
	placed int
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
	key := evictKey{mode: mode, sid: j.sid, leaf: j.leaf, rank: rank}
	if lo != j.spec.Replicas || j.sid == 0 {
		key.sid = s.shapeNo(j.shape(lo))
	}
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

// victims lists the jobs j may evict, cheapest first. The list is kept for
// the cycle (costs and ranks do not move while now stands still) and
// pruned of jobs evicted since; with MinRuntime zero, jobs placed in the
// cycle are victims too, so the list is rebuilt after a placement.
func (c *cycle) victims(j *job, mode evictMode, rank int64) []victim {
	key := victimKey{mode: mode, leaf: j.leaf, rank: rank}
	if c.s.cfg.MinRuntime == 0 {
		key.placed = c.placed
	}
	if vs, ok := c.victimCache[key]; ok {
		vs = slices.DeleteFunc(vs, func(v victim) bool { return v.j.state != stateRunning || v.j.pl != v.pl })
		c.victimCache[key] = vs
		return vs
	}
	vs := c.gatherVictims(j, mode, rank)
	if c.victimCache == nil {
		c.victimCache = map[victimKey][]victim{}
	}
	c.victimCache[key] = vs
	return vs
}

func (c *cycle) gatherVictims(j *job, mode evictMode, rank int64) []victim {
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
		out = append(out, victim{v, v.pl, v.cost(c.now), r})
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
	whole := j.m == 1 && j.spec.GPUsPerReplica == s.t.maxNodeGPUs
	for _, l := range levels {
		unit := need
		if whole && l != topology.LevelNode {
			unit = n // count nodes that can be emptied, not GPUs
		}
		ts := c.targets(j, vs, l, unit, whole && l != topology.LevelNode)
		for i := range ts {
			rq := j.request(n)
			if l == topology.LevelNode {
				rq.node = topology.NodeID(ts[i].id)
			} else {
				rq.within = topology.DomainID(ts[i].id)
			}
			if c.tryTarget(j, mode, &rq, vs, l, ts[i].id) {
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

// targets finds the nodes or domains of level l where freeing need GPUs
// is cheapest, estimating each as its free GPUs plus its victims taken
// cheapest first. Victims are swept in cost order, so a place completes at
// the cost of the victim that completes it or more: once MaxPreemptTargets
// places are complete and the sweep reaches a victim dearer than the last
// of them, nothing later can beat them.
//
// With nodes set, need counts whole nodes (a whole-node gang): a node
// counts once every GPU of it is free or held by victims swept so far.
func (c *cycle) targets(j *job, vs []victim, l topology.Level, need int, nodes bool) []target {
	s := c.s
	sc := s.scratch()
	defer sc.reset()
	k := s.cfg.MaxPreemptTargets
	var done []target
	placeOf := func(n topology.NodeID) int32 {
		if l == topology.LevelNode {
			return int32(n)
		}
		return int32(s.t.within(n, l))
	}
	for _, v := range vs {
		if len(done) >= k && v.cost > done[k-1].cost {
			break
		}
		sc.seen = sc.seen[:0]
		for _, a := range v.pl.Nodes {
			id := placeOf(a.Node)
			a2 := &sc.acc[id]
			if !a2.used {
				*a2 = evictAcc{used: true, n: c.freeIn(j, l, id, nodes)}
				sc.accTouched = append(sc.accTouched, id)
			}
			if !nodes {
				a2.n += bits.OnesCount64(a.GPUs)
			} else if c.emptiable(j, a, sc) {
				a2.n++
			}
			if !slices.Contains(sc.seen, id) {
				a2.cost += v.cost // a victim costs once per place it frees GPUs in
				sc.seen = append(sc.seen, id)
			}
		}
		for _, id := range sc.seen {
			if a2 := &sc.acc[id]; !a2.done && a2.n >= need {
				a2.done = true
				t := target{id: id, cost: a2.cost}
				i, _ := slices.BinarySearchFunc(done, t, func(x, y target) int {
					if x.cost != y.cost {
						return cmp.Compare(x.cost, y.cost)
					}
					return cmp.Compare(x.id, y.id)
				})
				done = slices.Insert(done, i, t)
			}
		}
	}
	if len(done) > k {
		done = done[:k]
	}
	return done
}

// evictScratch is per-scheduler working memory for targets: accumulators
// by node or domain ID and victims' GPUs per node, reset after each use
// through the lists of what was touched. It carries nothing between calls.
type evictScratch struct {
	acc         []evictAcc
	held        []int32
	accTouched  []int32
	heldTouched []int32
	seen        []int32
}

type evictAcc struct {
	used, done bool
	n          int // GPUs, or nodes that can be emptied
	cost       float64
}

func (s *Scheduler) scratch() *evictScratch {
	if s.esc == nil {
		s.esc = &evictScratch{acc: make([]evictAcc, max(len(s.t.f.Nodes), len(s.t.f.Domains))), held: make([]int32, len(s.t.f.Nodes))}
	}
	return s.esc
}

func (sc *evictScratch) reset() {
	for _, id := range sc.accTouched {
		sc.acc[id] = evictAcc{}
	}
	for _, n := range sc.heldTouched {
		sc.held[n] = 0
	}
	sc.accTouched, sc.heldTouched = sc.accTouched[:0], sc.heldTouched[:0]
}

// touches reports whether victim v holds GPUs in place id of level l.
func (s *Scheduler) touches(v *victim, l topology.Level, id int32) bool {
	for _, a := range v.pl.Nodes {
		if (l == topology.LevelNode && int32(a.Node) == id) || (l != topology.LevelNode && int32(s.t.within(a.Node, l)) == id) {
			return true
		}
	}
	return false
}

// emptiable adds a victim's GPUs on a node and reports whether that makes
// the node, of a pool j can use and in service, free of everything else.
func (c *cycle) emptiable(j *job, a NodeAlloc, sc *evictScratch) bool {
	s := c.s
	po := &s.t.pools[s.t.nodePool[a.Node]]
	if (j.spec.GPUModel != "" && po.model != j.spec.GPUModel) || po.gpus != j.spec.GPUsPerReplica || s.v.st.Cordoned(a.Node) {
		return false
	}
	if sc.held[a.Node] == 0 {
		sc.heldTouched = append(sc.heldTouched, int32(a.Node))
	}
	sc.held[a.Node] += int32(bits.OnesCount64(a.GPUs))
	free, _ := s.v.contrib(a.Node)
	return free+int(sc.held[a.Node]) == po.gpus
}

// freeIn is the free capacity j can use in a place: GPUs, or with nodes
// set, idle nodes.
func (c *cycle) freeIn(j *job, l topology.Level, id int32, nodes bool) int {
	s := c.s
	if nodes {
		idle := 0
		for p := range s.t.pools {
			po := &s.t.pools[p]
			if (j.spec.GPUModel == "" || po.model == j.spec.GPUModel) && po.gpus == j.spec.GPUsPerReplica {
				idle += int(s.v.idle[p][id])
			}
		}
		return idle
	}
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

// tryTarget simulates the eviction in one place (the victims of vs that
// hold GPUs there, cheapest first) and commits it or rolls it back.
func (c *cycle) tryTarget(j *job, mode evictMode, rq *request, vs []victim, l topology.Level, id int32) bool {
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
	for i := range vs {
		v := &vs[i]
		if !s.touches(v, l, id) {
			continue
		}
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
