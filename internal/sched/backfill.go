package sched

import (
	"slices"
	"time"
)

// reserve gives the first blocked job (the head) a reservation, EASY
// style: the running jobs are released, in the order they are expected to
// end, on a copy of the snapshot until the head fits. The head's start
// time is the expected end of the last job released; its placement there
// (the shadow) is held for the rest of the cycle in a second view, so
// later jobs backfill only where they do not delay it. Jobs without a
// runtime estimate are assumed to run forever, released last, oldest
// first; a reservation that needs one of them has an unknown start, and
// then only jobs outside the shadow may start.
func (c *cycle) reserve(j *job) {
	c.resTries++
	s := c.s
	rq := j.request(j.spec.Replicas)
	if !s.pl.mayFitEmpty(s.v, &rq) {
		return
	}
	order := slices.Clone(s.run)
	end := func(r *job) (time.Time, bool) {
		if r.spec.Runtime <= 0 {
			return time.Time{}, true
		}
		e := r.started.Add(r.spec.Runtime)
		if e.Before(c.now) {
			e = c.now // overran its estimate: it may end any moment
		}
		return e, false
	}
	slices.SortFunc(order, func(a, b *job) int {
		ea, ia := end(a)
		eb, ib := end(b)
		switch {
		case ia != ib:
			if ia {
				return 1
			}
			return -1
		case !ia && !ea.Equal(eb):
			return ea.Compare(eb)
		case ia && !a.started.Equal(b.started):
			return a.started.Compare(b.started)
		}
		return jobCmp(a, b)
	})
	sim := s.v.clone()
	var shadow *Placement
	var t time.Time
	var inf bool
	for i, r := range order {
		sim.releaseAll(r.pl.Nodes)
		e, ei := end(r)
		if i+1 < len(order) {
			if e2, ei2 := end(order[i+1]); ei == ei2 && !ei && e2.Equal(e) {
				continue // release everything that ends at the same time first
			}
		}
		if !s.pl.mayFit(sim, &rq) {
			continue
		}
		if p, _ := s.pl.place(sim, &rq); p != nil {
			shadow, t, inf = p, e, ei
			break
		}
	}
	if shadow == nil {
		j.wait = wait{code: wNoReservation, ms: j.wait.ms}
		return
	}
	c.head, c.resT, c.resInf, c.shadow = j, t, inf, shadow.Nodes
	c.held = s.v.clone()
	c.holdToo(shadow.Nodes)
	j.wait = wait{code: wReserved, t: t, inf: inf, n1: int64(len(shadow.Nodes))}
}

// backfill tries a job behind the reservation: one that surely ends before
// the reserved start may use any free GPU; any other only GPUs outside the
// reservation.
func (c *cycle) backfill(j *job, lo, hi int) {
	short := !c.resInf && j.spec.Runtime > 0 && !c.now.Add(j.spec.Runtime).After(c.resT)
	if short {
		if c.allocate(j, c.s.v, lo, hi) {
			c.out[len(c.out)-1].Reason = "backfill: ends before the reserved start of job " + c.head.spec.ID
		}
		return
	}
	if c.allocate(j, c.held, lo, hi) {
		c.out[len(c.out)-1].Reason = "backfill: outside the reservation of job " + c.head.spec.ID
		return
	}
	if p, _ := c.find(c.s.v, j, lo, hi); p != nil {
		j.wait = wait{code: wBackfill, job: c.head.spec.ID, t: c.resT, inf: c.resInf}
	}
}
