package sched

import (
	"fmt"
	"math/bits"
	"slices"
	"time"

	"gpucloud/internal/topology"
)

// standing is the EASY reservation in force between cycles, so that a
// blocked gang on a busy fleet does not cost a walk over every running job
// and two copies of the fleet's state on every cycle (at 131,072 GPUs that
// was most of the simulator's time). It is derived state: dropped by any
// change that could move the reservation's start earlier or take its GPUs,
// and recomputed from the snapshot by the next cycle that needs it. What
// keeps it:
//
//   - a job finishing at or after its expected end changes nothing the walk
//     sees from now on (its GPUs counted as free from then anyway);
//   - a job placed that ends by the reserved start leaves the head fitting
//     at the same time on the same GPUs;
//   - a job placed outside the shadow leaves the head fitting at the same
//     time on the shadow (a fresh walk could pick other GPUs then: the
//     kept shadow is as good a promise, and keeping it keeps the promise
//     stable);
//   - a job submitted or a pending job cancelled changes no GPU.
//
// Everything else (a job stopping before its expected end, a resize that
// frees GPUs, a node failing, repaired or cordoned, queues replaced, a
// placement on the shadow that outlives the start, the start reached)
// drops it. TestStandingReservation checks, after every event of random
// workloads, that a kept reservation starts when a fresh walk says and
// that its shadow is free then.
type standing struct {
	at     time.Time // when it was found; it holds from then on, not before
	head   *job
	t      time.Time
	inf    bool
	shadow []NodeAlloc
	// none lists jobs for which no reservation exists under the current
	// estimates: releasing every running job does not make room. Changes
	// that keep a reservation also keep these (they only take GPUs).
	none []noneAt
}

type noneAt struct {
	j  *job
	at time.Time // when the walk found nothing
}

// dropReservation forgets the standing reservation and the none memo.
func (s *Scheduler) dropReservation() {
	if s.res == nil {
		return
	}
	for _, a := range s.res.shadow {
		s.v.hold[a.Node] = 0
	}
	if s.v.mirror != nil {
		s.spare = s.v.mirror
	}
	s.v.mirror = nil
	s.res = nil
}

// setReservation makes (head, t, inf, shadow) the standing reservation:
// the hold view is the snapshot's view with the shadow's free GPUs taken.
func (s *Scheduler) setReservation(at time.Time, head *job, t time.Time, inf bool, shadow []NodeAlloc) {
	none := s.noneMemo()
	s.dropReservation()
	s.res = &standing{at: at, head: head, t: t, inf: inf, shadow: shadow, none: none}
	if s.v.hold == nil {
		s.v.hold = make([]uint64, len(s.t.f.Nodes))
	}
	held := s.v.cloneInto(s.spare)
	s.spare = nil
	for _, a := range shadow {
		s.v.hold[a.Node] = a.GPUs
		if m := a.GPUs & held.st.FreeMask(a.Node); m != 0 && !held.st.Cordoned(a.Node) {
			_ = held.alloc(a.Node, m)
		}
	}
	s.v.mirror = held
}

// noReservation records that j has no reservation at at.
func (s *Scheduler) noReservation(at time.Time, j *job) {
	if s.res == nil {
		s.res = &standing{at: at}
	}
	s.res.none = append(s.res.none, noneAt{j, at})
}

func (s *Scheduler) noneMemo() []noneAt {
	if s.res == nil {
		return nil
	}
	return s.res.none
}

// knownNone says whether j is known to have no reservation at now.
func (s *Scheduler) knownNone(j *job, now time.Time) bool {
	if s.res == nil {
		return false
	}
	return slices.ContainsFunc(s.res.none, func(x noneAt) bool { return x.j == j && !now.Before(x.at) })
}

func (s *Scheduler) inNone(j *job) bool {
	return s.res != nil && slices.ContainsFunc(s.res.none, func(x noneAt) bool { return x.j == j })
}

// reservationFor returns the standing reservation of j when it still
// applies at now.
func (s *Scheduler) reservationFor(j *job, now time.Time) *standing {
	r := s.res
	if r == nil || r.head != j || r.shadow == nil || now.Before(r.at) {
		return nil
	}
	if !r.inf && !r.t.After(now) {
		return nil // the start is reached and j still waits: estimates were off
	}
	return r
}

// onPlace keeps or drops the reservation as j starts on nodes.
func (s *Scheduler) onPlace(j *job, nodes []NodeAlloc) {
	r := s.res
	if r == nil {
		return
	}
	if r.head == j || s.inNone(j) {
		s.dropReservation()
		return
	}
	if r.shadow == nil || s.endsBy(j, r) {
		return
	}
	for _, a := range nodes {
		if a.GPUs&s.v.hold[a.Node] != 0 {
			s.dropReservation()
			return
		}
	}
}

// endsBy says whether running job j is expected to end by r's start.
func (s *Scheduler) endsBy(j *job, r *standing) bool {
	return !r.inf && j.spec.Runtime > 0 && j.end <= r.t.UnixNano()
}

// onResize keeps the reservation when j only grows, as a placement of the
// GPUs it adds would.
func (s *Scheduler) onResize(j *job, old map[topology.NodeID]uint64, p *Placement) {
	if s.res == nil {
		return
	}
	var add []NodeAlloc
	kept := 0
	for _, a := range p.Nodes {
		if m := a.GPUs &^ old[a.Node]; m != 0 {
			add = append(add, NodeAlloc{a.Node, m})
		}
		kept += bits.OnesCount64(a.GPUs & old[a.Node])
	}
	if kept < j.gpus {
		s.dropReservation() // it shrinks: GPUs come free before it ends
		return
	}
	s.onPlace(j, add)
}

// onStop keeps the reservation when j stops no earlier than expected.
func (s *Scheduler) onStop(j *job) {
	if s.res == nil {
		return
	}
	if j.spec.Runtime > 0 && j.end <= s.now.UnixNano() {
		return
	}
	s.dropReservation()
}

// checkHold verifies that the hold view is the snapshot's view plus the
// shadow's GPUs.
func (s *Scheduler) checkHold() error {
	h := s.v.mirror
	if h == nil {
		return nil
	}
	if s.res == nil || s.res.shadow == nil {
		return fmt.Errorf("reservation: a hold view without a reservation")
	}
	for n := range s.t.f.Nodes {
		id := topology.NodeID(n)
		if h.st.Cordoned(id) != s.v.st.Cordoned(id) {
			return fmt.Errorf("reservation: node %s cordoned in one view only", s.t.f.Nodes[n].Name)
		}
		if s.v.st.Cordoned(id) {
			continue
		}
		want := s.v.st.FreeMask(id) &^ s.v.hold[n]
		if got := h.st.FreeMask(id); got != want {
			return fmt.Errorf("reservation: node %s has free GPUs %#x in the hold view, want %#x", s.t.f.Nodes[n].Name, got, want)
		}
	}
	return h.checkIndex()
}
