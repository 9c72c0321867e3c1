package sched

import (
	"time"

	"gpucloud/internal/topology"
)

// cycle is one call to Schedule.
type cycle struct {
	s   *Scheduler
	now time.Time
	out []Decision

	placed  int // placements so far: preemption memo entries expire with them
	stopped *job

	// EASY reservation of the first blocked job
	head     *job
	resT     time.Time
	resInf   bool
	shadow   []NodeAlloc
	resTries int

	evictFails  map[evictKey]evictMemo
	victimCache map[victimKey][]victim
}

// Schedule runs one scheduling cycle at now and returns its decisions,
// already applied to the snapshot: rejections of jobs that became
// impossible first, then in the policy's order each job's preemptions and
// placement, then the growth of elastic jobs.
func (s *Scheduler) Schedule(now time.Time) []Decision {
	s.advance(now)
	s.cycleNo++
	c := &cycle{s: s, now: s.now}
	c.out = append(c.out, s.rejects...)
	s.rejects = nil
	it := newIterator(c)
	s.unseen = wait{}
	for j := it.next(); j != nil; j = it.next() {
		if c.head != nil && !s.v.anyFree() {
			// Behind a reservation only free GPUs can serve, and there
			// are none: the rest of the queue need not be looked at.
			s.unseen = wait{code: wFleetFull}
			break
		}
		j.seen = s.cycleNo
		c.consider(j)
		if c.stopped != nil {
			s.unseen = wait{code: wBehind, job: c.stopped.spec.ID}
			break
		}
	}
	if c.stopped == nil && s.prof.grow {
		c.grow()
	}
	return c.out
}

// consider runs the extension points on one pending job.
func (c *cycle) consider(j *job) {
	prof := &c.s.prof
	lo := j.minReplicas()
	hi, qw := j.spec.Replicas, wait{}
	for _, f := range prof.filters {
		if r, w := f.room(j); r < hi {
			hi, qw = r, w
		}
	}
	quotaOK := hi >= lo
	if c.head != nil {
		if quotaOK {
			c.backfill(j, lo, hi)
		} else {
			j.wait = qw
		}
		return
	}
	if quotaOK && c.allocate(j, c.s.v, lo, hi) {
		return
	}
	for _, a := range prof.actions {
		if a.try(c, j) {
			return
		}
	}
	if !quotaOK {
		j.wait = qw
		if prof.strict {
			c.stopped = j
		}
		return
	}
	switch {
	case prof.strict:
		c.stopped = j
	case prof.backfill && c.resTries < 2:
		c.reserve(j)
	}
}

// allocate places j on free GPUs of v: the full gang, or for an elastic job
// the most replicas between lo and hi that fit.
func (c *cycle) allocate(j *job, v *view, lo, hi int) bool {
	p, ms := c.find(v, j, lo, hi)
	if p == nil {
		j.wait = wait{code: wNoFit, ms: ms}
		return false
	}
	c.commit(j, p)
	return true
}

// find searches a placement without changing anything. Failures are
// memoised per shape until the view gains capacity, so 10,000 pending jobs
// of a few shapes cost a few searches.
//
// A job with a Preferred level first looks inside one domain of that level
// (an elastic one at any size it accepts), then as wide as it may.
func (c *cycle) find(v *view, j *job, lo, hi int) (*Placement, miss) {
	if j.pref != nil {
		if p, _ := c.findIn(v, j, *j.pref, lo, hi); p != nil {
			return p, miss{}
		}
	}
	return c.findIn(v, j, j.sc, lo, hi)
}

func (c *cycle) findIn(v *view, j *job, sc scope, lo, hi int) (*Placement, miss) {
	try := func(n int) (*Placement, miss) {
		// The job's full shape is numbered when it joins the queue, so
		// the memo lookup a cycle does once per waiting job is a slice
		// index; other sizes (elastic jobs) are numbered here.
		id := int32(0)
		if n == j.spec.Replicas {
			switch {
			case sc == j.sc:
				id = j.sid
			case j.pref != nil && sc == *j.pref:
				id = j.psid
			}
		}
		if id == 0 {
			key := j.shape(n)
			key.sc = sc
			id = c.s.shapeNo(key)
		}
		if f := v.failed(id); f != nil {
			return nil, f.miss
		}
		rq := j.request(n)
		rq.scope = sc
		p, ms := c.s.pl.place(v, &rq)
		if p == nil {
			v.setFailed(id, ms)
		}
		return p, ms
	}
	p, ms := try(hi)
	if p != nil || lo >= hi {
		return p, ms
	}
	// Elastic: the largest size that fits, in whole tensor-parallel groups.
	m := j.m
	a, b := lo/m, hi/m-1
	var best *Placement
	for a <= b {
		mid := (a + b) / 2
		if q, _ := try(mid * m); q != nil {
			best, a = q, mid+1
		} else {
			b = mid - 1
		}
	}
	return best, ms
}

// commit starts j on p (reserve, in kube-scheduler terms): the snapshot,
// the reservation view if there is one, and the decision.
func (c *cycle) commit(j *job, p *Placement) {
	c.s.place(j, p, c.now)
	c.placed++
	c.out = append(c.out, Decision{Kind: Place, Job: j.spec.ID, Placement: clonePlacement(p)})
}

// iterator yields pending jobs in the policy's order: one ordered index,
// or with fair share, the lowest-share queue at every level of the tree,
// then inside a leaf queue the best lane (tenant), recomputed after every
// job so that placements move the shares. It reads copy-on-write snapshots
// taken at the start of the cycle, so jobs requeued during the cycle wait
// for the next one.
type iterator struct {
	c    *cycle
	flat *cursor // without fair share
}

func newIterator(c *cycle) *iterator {
	s := c.s
	it := &iterator{c: c}
	if !s.prof.fairShare {
		it.flat = newCursor(s.pendIdx)
		return it
	}
	for _, q := range s.qt.all {
		q.remain = q.npend
		for _, t := range q.tenants {
			t.lane = nil
			if t.pend.t.Len() > 0 {
				t.lane = newCursor(t.pend)
			}
		}
	}
	return it
}

func (it *iterator) next() *job {
	if it.flat != nil {
		return it.flat.next()
	}
	s := it.c.s
	q := s.pickQueue(s.qt.roots)
	if q == nil {
		return nil
	}
	for !q.leaf() {
		q = s.pickQueue(q.children)
	}
	j := s.pickTenant(q).lane.next()
	for a := q; a != nil; a = a.parent {
		a.remain--
	}
	return j
}

// pickQueue is the queue with pending jobs and the lowest fair-share key.
func (s *Scheduler) pickQueue(qs []*queue) *queue {
	var best *queue
	bt, bk := 0, 0.0
	for _, q := range qs {
		if q.remain == 0 {
			continue
		}
		t, k := s.queueKey(q)
		if best == nil || t < bt || (t == bt && k < bk) {
			best, bt, bk = q, t, k
		}
	}
	return best
}

// pickTenant is the lane whose head goes next: the best key first when the
// order ranks by priority, then the tenant with the lowest dominant share,
// then the earliest head, then the tenant's name.
func (s *Scheduler) pickTenant(q *queue) *tenant {
	var best *tenant
	var bs float64
	for _, t := range q.tenants {
		if t.lane == nil || t.lane.peek() == nil {
			continue
		}
		sh := s.share(t.curM, t.dec)
		if best == nil {
			best, bs = t, sh
			continue
		}
		h, bh := t.lane.peek(), best.lane.peek()
		if s.prof.order.byPriority() && h.key != bh.key {
			if h.key < bh.key {
				best, bs = t, sh
			}
			continue
		}
		if sh != bs {
			if sh < bs {
				best, bs = t, sh
			}
			continue
		}
		if jobCmp(h, bh) < 0 {
			best, bs = t, sh
		}
	}
	return best
}

// within returns the ancestor of node n at level l.
func (t *topo) within(n topology.NodeID, l topology.Level) topology.DomainID {
	d, ok := t.f.Ancestor(n, l)
	if !ok {
		return topology.NoDomain
	}
	return d
}
