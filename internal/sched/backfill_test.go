package sched

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// reserveBySort is the reservation computed the plain way: sort every
// running job by expected end (overrun jobs end now, jobs without a
// runtime last, oldest first), release them in that order on a copy of the
// view and stop at the first end after which the job fits. The scheduler
// walks an index instead of sorting; both must agree.
func reserveBySort(s *Scheduler, j *job, now time.Time) (t time.Time, inf bool, shadow []NodeAlloc) {
	t, inf, shadow, _ = reserveBySortView(s, j, now)
	return t, inf, shadow
}

// reserveBySortView also returns the view at the reservation's start.
func reserveBySortView(s *Scheduler, j *job, now time.Time) (t time.Time, inf bool, shadow []NodeAlloc, at *view) {
	rq := j.request(j.spec.Replicas)
	if !s.pl.mayFitEmpty(s.v, &rq) {
		return time.Time{}, false, nil, nil
	}
	end := func(r *job) (time.Time, bool) {
		if r.spec.Runtime <= 0 {
			return time.Time{}, true
		}
		return maxTime(r.started.Add(r.spec.Runtime), now), false
	}
	order := slices.Clone(s.run)
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
	for i, r := range order {
		sim.releaseAll(r.pl.Nodes)
		e, ei := end(r)
		if i+1 < len(order) {
			if e2, ei2 := end(order[i+1]); !ei && !ei2 && e2.Equal(e) {
				continue
			}
		}
		if !s.pl.mayFit(sim, &rq) {
			continue
		}
		if p, _ := s.pl.place(sim, &rq); p != nil {
			return e, ei, p.Nodes, sim
		}
	}
	return time.Time{}, false, nil, nil
}

func maxTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return b
	}
	return a
}

// TestReserveMatchesSort: over random workloads, after every event, the
// reservation every pending job would get equals the one found by sorting
// all running jobs.
func TestReserveMatchesSort(t *testing.T) {
	seeds := 30
	if testing.Short() {
		seeds = 6
	}
	compared, reserved := 0, 0
	for seed := range uint64(seeds) {
		w, f, ops := generate(t, 1000+seed, 300)
		w.cfg = ConfigFor(PolicyBackfill)
		s := w.scheduler(t, f)
		for i, o := range ops {
			now := t0.Add(o.at)
			_, _ = applyOp(s, o)
			// Ask at a later time too, so that some jobs have overrun.
			for _, at := range []time.Time{now, now.Add(45 * time.Minute)} {
				for _, j := range slices.Clone(s.pend) {
					wantT, wantInf, wantShadow := reserveBySort(s, j, at)
					c := &cycle{s: s, now: at}
					saved := j.wait
					c.reserve(j)
					j.wait = saved
					var gotShadow []NodeAlloc
					if c.head != nil {
						gotShadow = c.shadow
						reserved++
					}
					want := fmt.Sprint(wantT.UnixNano(), wantInf, wantShadow)
					got := fmt.Sprint(c.resT.UnixNano(), c.resInf, gotShadow)
					if wantShadow == nil {
						want = "none"
					}
					if c.head == nil {
						got = "none"
					}
					if d := cmp.Diff(want, got); d != "" {
						t.Fatalf("seed %d op %d job %s at %v: reservation differs (-sort +index):\n%s", seed, i, j.spec.ID, at, d)
					}
					compared++
				}
			}
		}
	}
	if reserved == 0 || reserved == compared {
		t.Fatalf("%d of %d reservations found: the workloads test nothing", reserved, compared)
	}
	t.Logf("%d reservations compared, %d found", compared, reserved)
}

// TestStandingReservation: over random workloads under the policies that
// backfill, after every event, a reservation kept from an earlier cycle
// starts when a fresh walk over the snapshot says, and its shadow is free
// then; a job remembered as having none has none. Kept reservations must
// actually occur, or the test tests nothing.
func TestStandingReservation(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 8
	}
	kept, nones := 0, 0
	for seed := range uint64(seeds) {
		w, f, ops := generate(t, 2000+seed, 400)
		w.cfg = ConfigFor([]Policy{PolicyBackfill, PolicyDefault}[seed%2])
		s := w.scheduler(t, f)
		var last *standing
		for i, o := range ops {
			if o.kind == "schedule" && s.res != nil && s.res == last && s.res.head != nil {
				kept++
			}
			_, _ = applyOp(s, o)
			if o.kind == "schedule" {
				last = s.res
			}
			if err := s.Check(); err != nil {
				t.Fatalf("seed %d op %d: %v", seed, i, err)
			}
			r := s.res
			if r == nil {
				continue
			}
			for _, x := range r.none {
				if x.j.state != statePending {
					continue
				}
				if _, _, sh := reserveBySort(s, x.j, s.now); sh != nil {
					t.Fatalf("seed %d op %d: job %s remembered without a reservation, a fresh walk finds one", seed, i, x.j.spec.ID)
				}
				nones++
			}
			if r.head == nil || r.shadow == nil || (!r.inf && !r.t.After(s.now)) {
				continue
			}
			wantT, wantInf, _, at := reserveBySortView(s, r.head, s.now)
			if at == nil {
				t.Fatalf("seed %d op %d: job %s keeps a reservation, a fresh walk finds none", seed, i, r.head.spec.ID)
			}
			if wantInf != r.inf || (!wantInf && !wantT.Equal(r.t)) {
				t.Fatalf("seed %d op %d: job %s keeps a reservation at %v (unknown start: %v), a fresh walk says %v (%v)",
					seed, i, r.head.spec.ID, r.t, r.inf, wantT, wantInf)
			}
			for _, a := range r.shadow {
				if free := at.st.FreeMask(a.Node); a.GPUs&^free != 0 || at.st.Cordoned(a.Node) {
					t.Fatalf("seed %d op %d: job %s's shadow on node %d (%#x) is not free at its start (%#x)",
						seed, i, r.head.spec.ID, a.Node, a.GPUs, free)
				}
			}
		}
	}
	if kept == 0 {
		t.Fatal("no reservation was kept across cycles: the workloads test nothing")
	}
	t.Logf("%d cycles kept a reservation; %d memos of none checked", kept, nones)
}

// TestReservationMovesWhenAJobAheadTakesItsShadow: a reservation kept
// across cycles moves when a job that comes first starts on its GPUs and
// outlasts its start, and stays when a job that ends before it does.
func TestReservationMovesWhenAJobAheadTakesItsShadow(t *testing.T) {
	f := fab{leaves: 1, nodes: 2, gpus: 8}.build(t)
	s := New(f, ConfigFor(PolicyDefault))
	step := func(at time.Duration) []Decision {
		ds := s.Schedule(t0.Add(at))
		if err := s.Check(); err != nil {
			t.Fatal(err)
		}
		return ds
	}
	submit := func(j Job) {
		if err := s.Submit(j); err != nil {
			t.Fatal(err)
		}
	}
	submit(jb("a").gang(1, 4).runtime(time.Hour).fixed().obj())
	submit(jb("b").gang(1, 8).runtime(2 * time.Hour).fixed().obj())
	step(0)
	submit(jb("head").gang(2, 8).runtime(time.Hour).at(time.Minute).obj())
	step(time.Minute)
	wantStart := func(at time.Duration) {
		t.Helper()
		want := "expected start " + t0.Add(at).Format(time.RFC3339)
		if r := s.PendingReason("head"); !strings.Contains(r, want) {
			t.Fatalf("PendingReason(head) = %q, want it to contain %q", r, want)
		}
	}
	wantStart(2 * time.Hour)
	// A short job ahead of the head (higher priority) on the shadow: the
	// start stays.
	submit(jb("short").gang(1, 4).prio(5).runtime(30 * time.Minute).fixed().at(2 * time.Minute).obj())
	step(2 * time.Minute)
	if _, ok := s.JobPlacement("short"); !ok {
		t.Fatal("short did not start")
	}
	wantStart(2 * time.Hour)
	if err := s.Cancel("short"); err != nil { // it stops early: the start may move
		t.Fatal(err)
	}
	step(3 * time.Minute)
	wantStart(2 * time.Hour)
	// A long one ahead of it on the shadow: the start moves to its end.
	submit(jb("long").gang(1, 4).prio(5).runtime(10 * time.Hour).fixed().at(4 * time.Minute).obj())
	step(4 * time.Minute)
	if _, ok := s.JobPlacement("long"); !ok {
		t.Fatal("long did not start")
	}
	wantStart(4*time.Minute + 10*time.Hour)
}
