package sched

import (
	"slices"
	"time"
)

// reserve gives the first blocked job (the head) a reservation, EASY
// style: the running jobs are released, in the order they are expected to
// end, on a copy of the snapshot until the head fits. The head's start
// time is the expected end of the last job released; its placement there
// (the shadow) is held in a second view, so later jobs backfill only where
// they do not delay it. Jobs without a runtime estimate are assumed to run
// forever, released last, oldest first; a reservation that needs one of
// them has an unknown start, and then only jobs outside the shadow may
// start. The reservation stands across cycles while nothing changes that
// could move it (reservation.go).
func (c *cycle) reserve(j *job) {
	c.resTries++
	s := c.s
	if r := s.reservationFor(j, c.now); r != nil {
		c.hold(r)
		return
	}
	if s.knownNone(j, c.now) {
		j.wait = wait{code: wNoReservation, ms: j.wait.ms}
		return
	}
	rq := j.request(j.spec.Replicas)
	if !s.pl.mayFitEmpty(s.v, &rq) {
		return
	}
	t, inf, shadow := s.walkEnds(&rq, c.now)
	if shadow == nil {
		s.noReservation(c.now, j)
		j.wait = wait{code: wNoReservation, ms: j.wait.ms}
		return
	}
	s.setReservation(c.now, j, t, inf, shadow.Nodes)
	c.hold(s.res)
}

// hold applies reservation r to the rest of the cycle.
func (c *cycle) hold(r *standing) {
	c.head, c.resT, c.resInf, c.shadow = r.head, r.t, r.inf, r.shadow
	r.head.wait = wait{code: wReserved, t: r.t, inf: r.inf, n1: int64(len(r.shadow))}
}

// holdView is the hold view of the cycle's reservation: the snapshot's
// view with the shadow's GPUs also taken (kept in step by view.mirror),
// where jobs that would outlast the reserved start look for room; nil when
// a change during the cycle dropped the reservation (then only jobs that
// end before the reserved start may still start: they cannot delay it).
func (c *cycle) holdView() *view {
	if r := c.s.res; r != nil && r.head == c.head && r.shadow != nil {
		return c.s.v.mirror
	}
	return nil
}

// walkEnds releases the running jobs by expected end, in a copy of the
// view, and stops at the first end after which rq fits: jobs that overran
// their estimate may end any moment (now); jobs that end together are
// released together; jobs without a runtime come last, the longest-running
// first (then the start is unknown: inf).
func (s *Scheduler) walkEnds(rq *request, at time.Time) (t time.Time, inf bool, shadow *Placement) {
	sim := s.v.cloneInto(s.walkView)
	s.walkView = sim
	fits := func() bool {
		if !s.pl.mayFit(sim, rq) {
			return false
		}
		shadow, _ = s.pl.place(sim, rq)
		return shadow != nil
	}
	now := at.UnixNano()
	group, open := int64(0), false
	s.ends.ascend(func(r *job) bool {
		e := max(r.end, now)
		if open && e != group && fits() {
			return false
		}
		sim.releaseAll(r.pl.Nodes)
		group, open = e, true
		return true
	})
	if shadow != nil || (open && fits()) {
		return time.Unix(0, group).In(at.Location()), false, shadow
	}
	var rest []*job
	for _, r := range s.run {
		if r.spec.Runtime <= 0 {
			rest = append(rest, r)
		}
	}
	slices.SortFunc(rest, startCmp)
	for _, r := range rest {
		sim.releaseAll(r.pl.Nodes)
		if fits() {
			return time.Time{}, true, shadow
		}
	}
	return time.Time{}, false, nil
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
	held := c.holdView()
	if held == nil {
		j.wait = wait{code: wBackfill, job: c.head.spec.ID, t: c.resT, inf: c.resInf}
		return
	}
	if c.allocate(j, held, lo, hi) {
		c.out[len(c.out)-1].Reason = "backfill: outside the reservation of job " + c.head.spec.ID
		return
	}
	// Whether free GPUs would hold it but for the reservation only sets
	// the reason: count them (mayFit) rather than search a big gang's
	// placement, which costs more than the rest of a cycle.
	rq := j.request(lo)
	if c.s.pl.mayFit(c.s.v, &rq) {
		j.wait = wait{code: wBackfill, job: c.head.spec.ID, t: c.resT, inf: c.resInf}
	}
}
