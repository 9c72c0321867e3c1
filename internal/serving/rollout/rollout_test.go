package rollout

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// rep builds an observed replica: rep("a", "v1", Ready).inflight(3).since(5s).
func rep(id, rev string, s State) Replica {
	return Replica{ID: id, Revision: rev, State: s, Since: t0}
}

func (r Replica) inflight(n int) Replica         { r.InFlight = n; return r }
func (r Replica) since(d time.Duration) Replica  { r.Since = t0.Add(d); return r }
func (r Replica) failed() Replica                { r.Failed = true; return r }
func start(rev string) Action                    { return Action{Kind: Start, Revision: rev} }
func act(k Kind, id string) Action               { return Action{Kind: k, ID: id} }
func spec(rev string, n int) Spec                { return Spec{Revision: rev, Replicas: n} }
func (s Spec) readyTimeout(d time.Duration) Spec { s.ReadyTimeout = d; return s }

var ignoreReason = cmpopts.IgnoreFields(Action{}, "Reason")

func TestPlan(t *testing.T) {
	tests := []struct {
		name     string
		now      time.Duration
		spec     Spec
		replicas []Replica
		want     []Action
		complete bool
	}{
		{
			name: "scale up from nothing starts all at once", spec: spec("v1", 3),
			want: []Action{start("v1"), start("v1"), start("v1")},
		},
		{
			name: "steady state does nothing", spec: spec("v1", 2),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v1", Ready)},
			complete: true,
		},
		{
			name: "starting replicas are waited for", spec: spec("v1", 2),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v1", Starting)},
		},
		{
			name: "scale down drains the not-ready, then the least busy", spec: spec("v1", 1),
			replicas: []Replica{rep("a", "v1", Ready).inflight(2), rep("b", "v1", Ready).inflight(1), rep("c", "v1", Starting)},
			want:     []Action{act(Drain, "c"), act(Drain, "b")},
		},
		{
			name: "scale down breaks ties by newest", spec: spec("v1", 1),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v1", Ready).since(time.Second)},
			want:     []Action{act(Drain, "b")},
		},
		{
			name: "rolling update surges one", spec: spec("v2", 3),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v1", Ready), rep("c", "v1", Ready)},
			want:     []Action{start("v2")},
		},
		{
			name: "rolling update waits for the surged replica", spec: spec("v2", 3),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v1", Ready), rep("c", "v1", Ready), rep("d", "v2", Starting)},
		},
		{
			name: "rolling update drains one old when the new one is ready", spec: spec("v2", 3),
			replicas: []Replica{rep("a", "v1", Ready).inflight(5), rep("b", "v1", Ready).inflight(1), rep("c", "v1", Ready).inflight(3), rep("d", "v2", Ready)},
			want:     []Action{act(Drain, "b")},
		},
		{
			name: "the draining replica still holds GPUs: no second surge", spec: spec("v2", 3),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v1", Draining).inflight(1), rep("c", "v1", Ready), rep("d", "v2", Ready)},
		},
		{
			name: "drained replica is stopped", spec: spec("v2", 3),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v1", Draining), rep("c", "v1", Ready), rep("d", "v2", Ready)},
			want:     []Action{act(Stop, "b")},
		},
		{
			name: "stopped replica exits: forget it and surge the next", spec: spec("v2", 3),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v1", Exited), rep("c", "v1", Ready), rep("d", "v2", Ready)},
			want:     []Action{act(Forget, "b"), start("v2")},
		},
		{
			name: "old replicas that are not ready go at once", spec: spec("v2", 2),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v1", Unready), rep("c", "v1", Starting)},
			// They hold GPUs until stopped (next plan: nothing in flight).
			want: []Action{act(Drain, "b"), act(Drain, "c")},
		},
		{
			name: "rolling update while scaling up starts the difference at once", spec: spec("v2", 4),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v1", Ready)},
			want:     []Action{start("v2"), start("v2"), start("v2")},
		},
		{
			name: "rolling update while scaling down drains the excess old", spec: spec("v2", 1),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v1", Ready), rep("c", "v1", Ready)},
			want:     []Action{act(Drain, "a"), act(Drain, "b")},
		},
		{
			name: "last old replica goes when the new ones are ready", spec: spec("v2", 2),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v2", Ready), rep("c", "v2", Ready)},
			want:     []Action{act(Drain, "a")},
		},
		{
			name: "scale to zero", spec: spec("v1", 0),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v1", Ready)},
			want:     []Action{act(Drain, "a"), act(Drain, "b")},
		},
		{
			name: "drain timeout stops a busy replica", now: 3 * time.Minute, spec: spec("v1", 1),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v1", Draining).inflight(2).since(time.Minute)},
			want:     []Action{act(Stop, "b")},
		},
		{
			name: "drain timeout not reached", now: 2 * time.Minute, spec: spec("v1", 1),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v1", Draining).inflight(2).since(time.Minute)},
		},
		{
			name: "stopping replicas are left alone", spec: spec("v1", 1),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v1", Stopping)},
		},
		{
			name: "a crashed replica is forgotten and replaced", spec: spec("v1", 2),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v1", Exited).failed()},
			want:     []Action{act(Forget, "b"), start("v1")},
		},
		{
			name: "ready timeout replaces a replica stuck starting", now: 10 * time.Minute, spec: spec("v1", 2).readyTimeout(5 * time.Minute),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v1", Starting)},
			want:     []Action{act(Drain, "b"), start("v1")},
		},
		{
			name: "ready timeout replaces a wedged replica", now: 10 * time.Minute, spec: spec("v1", 2).readyTimeout(5 * time.Minute),
			replicas: []Replica{rep("a", "v1", Ready), rep("b", "v1", Unready).since(4 * time.Minute)},
			want:     []Action{act(Drain, "b"), start("v1")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]Replica(nil), tc.replicas...)
			got, st := NewPlanner(Backoff{}).Plan(t0.Add(tc.now), tc.spec, tc.replicas)
			if diff := cmp.Diff(tc.want, got, ignoreReason, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("actions (-want +got):\n%s", diff)
			}
			for _, a := range got {
				if a.Reason == "" {
					t.Errorf("%v has no reason", a)
				}
			}
			if st.Complete != tc.complete {
				t.Errorf("complete = %v, want %v (%+v)", st.Complete, tc.complete, st)
			}
			if diff := cmp.Diff(in, tc.replicas); diff != "" {
				t.Errorf("Plan modified its input:\n%s", diff)
			}
		})
	}
}

func TestCrashLoopBacksOff(t *testing.T) {
	p := NewPlanner(Backoff{Base: time.Second, Max: 4 * time.Second})
	s := spec("v2", 1)
	old := rep("a", "v1", Ready)
	// Each new replica crashes: the first is replaced at once, then the
	// next start waits 1s, 2s, 4s, 4s.
	now := t0
	for i, wait := range []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		id := fmt.Sprint("n", i)
		crashed := rep(id, "v2", Exited).failed()
		acts, st := p.Plan(now, s, []Replica{old, crashed})
		want := []Action{act(Forget, id)}
		if wait == 0 {
			want = append(want, start("v2"))
		}
		if diff := cmp.Diff(want, acts, ignoreReason); diff != "" {
			t.Fatalf("crash %d at %v (-want +got):\n%s", i, now.Sub(t0), diff)
		}
		if st.Failures != i+1 {
			t.Fatalf("crash %d: failures %d, want %d", i, st.Failures, i+1)
		}
		if wait == 0 {
			continue
		}
		if !st.RetryAt.Equal(now.Add(wait)) {
			t.Fatalf("crash %d: retry at %v, want %v", i, st.RetryAt.Sub(t0), now.Add(wait).Sub(t0))
		}
		// Still backing off just before, the same crash is not counted
		// twice, and the old replica keeps serving.
		if acts, st := p.Plan(now.Add(wait-time.Millisecond), s, []Replica{old, crashed}); len(acts) != 1 || st.Failures != i+1 {
			t.Fatalf("crash %d: during backoff: %v, failures %d", i, acts, st.Failures)
		}
		now = now.Add(wait)
		acts, _ = p.Plan(now, s, []Replica{old})
		if diff := cmp.Diff([]Action{start("v2")}, acts, ignoreReason); diff != "" {
			t.Fatalf("after backoff %d (-want +got):\n%s", i, diff)
		}
	}
	// A replica that gets ready ends the loop.
	p.Plan(now, s, []Replica{old, rep("ok", "v2", Ready)})
	_, st := p.Plan(now, s, []Replica{old, rep("ok2", "v2", Exited).failed()})
	if st.Failures != 1 {
		t.Fatalf("failures after a ready replica and one crash = %d, want 1", st.Failures)
	}
}

// world applies a planner's actions the way a controller and real
// replicas would, with random start-up and drain times.
type world struct {
	r        *rand.Rand
	replicas []Replica
	left     map[string]int // ticks until Starting becomes Ready, or until a drain finishes
	next     int
}

func (w *world) apply(now time.Time, acts []Action) {
	for _, a := range acts {
		switch a.Kind {
		case Start:
			id := fmt.Sprint("r", w.next)
			w.next++
			w.replicas = append(w.replicas, Replica{ID: id, Revision: a.Revision, State: Starting, Since: now})
			w.left[id] = 1 + w.r.IntN(4)
		case Drain, Stop, Forget:
			i := w.index(a.ID)
			switch a.Kind {
			case Drain:
				w.replicas[i].State, w.replicas[i].Since = Draining, now
				w.left[a.ID] = w.r.IntN(3)
			case Stop:
				w.replicas[i].State = Stopping
			case Forget:
				w.replicas = append(w.replicas[:i], w.replicas[i+1:]...)
			}
		}
	}
}

func (w *world) index(id string) int {
	for i, r := range w.replicas {
		if r.ID == id {
			return i
		}
	}
	panic("no replica " + id)
}

// tick advances the replicas by one step of time.
func (w *world) tick(now time.Time) {
	for i := range w.replicas {
		r := &w.replicas[i]
		switch r.State {
		case Starting:
			if w.left[r.ID]--; w.left[r.ID] <= 0 {
				r.State, r.Since = Ready, now
			}
		case Ready:
			r.InFlight = w.r.IntN(5)
		case Draining:
			if w.left[r.ID] > 0 {
				w.left[r.ID]--
			}
			r.InFlight = w.left[r.ID]
		case Stopping:
			r.State = Exited
		}
	}
}

func count(rs []Replica, f func(Replica) bool) int {
	n := 0
	for _, r := range rs {
		if f(r) {
			n++
		}
	}
	return n
}

// Rolling updates and scale changes at random: ready capacity never falls
// below what is wanted because of a drain, GPUs held stay within the surge,
// and every update completes.
func TestRandomRolloutsKeepCapacity(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 7))
		w := &world{r: r, left: map[string]int{}}
		p := NewPlanner(Backoff{})
		s := Spec{Revision: "v0", Replicas: 1 + r.IntN(5)}
		now := t0
		for step := 0; step < 400; step++ {
			now = now.Add(time.Second)
			if step%60 == 0 && step > 0 {
				// A new revision, sometimes with a new count.
				s.Revision = fmt.Sprint("v", step/60)
				if r.IntN(2) == 0 {
					s.Replicas = 1 + r.IntN(5)
				}
			}
			readyBefore := count(w.replicas, func(x Replica) bool { return x.State == Ready })
			oldBefore := count(w.replicas, func(x Replica) bool { return x.Revision != s.Revision && x.State <= Unready })
			acts, st := p.Plan(now, s, w.replicas)
			w.apply(now, acts)
			readyAfter := count(w.replicas, func(x Replica) bool { return x.State == Ready })
			if readyAfter < min(s.Replicas, readyBefore) {
				t.Fatalf("seed %d step %d: ready %d -> %d with %d wanted: %v", seed, step, readyBefore, readyAfter, s.Replicas, acts)
			}
			holders := count(w.replicas, func(x Replica) bool { return x.State != Exited })
			if oldBefore > 0 {
				started := 0
				for _, a := range acts {
					if a.Kind == Start {
						started++
					}
				}
				if started > 0 && holders > s.Replicas+DefaultMaxSurge {
					t.Fatalf("seed %d step %d: %d replicas hold GPUs during a rollout to %d: %v", seed, step, holders, s.Replicas, acts)
				}
			}
			if step%60 == 59 && !st.Complete {
				t.Fatalf("seed %d step %d: rollout to %s not complete after 59 steps: %+v %+v", seed, step, s.Revision, st, w.replicas)
			}
			w.tick(now)
		}
	}
}
