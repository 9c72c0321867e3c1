// Package rollout decides which replicas of an inference deployment to
// start, drain and stop. It is pure: the replicas as observed and the time
// come in, actions come out, and the same inputs always give the same
// actions.
//
// One planner covers scaling and rolling updates, level-triggered like a
// Kubernetes Deployment, so a restarted server resumes a half-done rollout
// from what it observes:
//
//   - replicas of the desired revision are started until there are enough;
//     while old-revision replicas remain, only MaxSurge beyond the desired
//     count may hold GPUs at once (draining and stopping replicas count: a
//     replica that is still finishing requests still holds its GPUs);
//   - an old replica is drained only when the ready replicas that remain
//     are still at least the desired count, so a rolling update never
//     lowers capacity: surge one, wait for it to be ready, drain one old;
//   - a draining replica is stopped once the router has no request in
//     flight on it (or its drain timeout passes), so no request fails;
//   - replicas that crash are forgotten and replaced, with exponential
//     backoff per revision, so a broken revision does not spin.
package rollout

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// State is the life of one replica as the controller sees it.
type State int

const (
	// Starting: asked for (being scheduled, launching, loading its model),
	// not ready yet.
	Starting State = iota
	// Ready: passing readiness checks; the router sends it requests.
	Ready
	// Unready: was ready, now failing checks; the router skips it.
	Unready
	// Draining: out of the router, finishing the requests it holds.
	Draining
	// Stopping: asked to stop, not exited yet.
	Stopping
	// Exited: the process is gone; Failed says whether it crashed.
	Exited
)

var stateNames = [...]string{"Starting", "Ready", "Unready", "Draining", "Stopping", "Exited"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Replica is one replica as observed.
type Replica struct {
	ID       string
	Revision string
	State    State
	// Since is when the replica entered its state (Starting: when it was
	// asked for).
	Since time.Time
	// InFlight is the number of requests the router has on it.
	InFlight int
	// Failed marks an Exited replica that was not stopped by us.
	Failed bool
}

// Spec is what the deployment wants.
type Spec struct {
	Revision string
	Replicas int
	// MaxSurge is how many replicas beyond Replicas may hold GPUs during a
	// rolling update (default 1).
	MaxSurge int
	// DrainTimeout stops a draining replica even with requests in flight
	// (default 2m: an LLM stream can run for minutes, but not for ever).
	DrainTimeout time.Duration
	// ReadyTimeout replaces a replica that has not become ready this long
	// after it was asked for, or that has been unready this long (0: never;
	// model loads vary a lot).
	ReadyTimeout time.Duration
}

// Defaults of a Spec.
const (
	DefaultMaxSurge     = 1
	DefaultDrainTimeout = 2 * time.Minute
)

// Kind is what an action does.
type Kind int

const (
	Start  Kind = iota // start a replica of Action.Revision
	Drain              // take Action.ID out of the router; it keeps its requests
	Stop               // stop Action.ID's process (SIGTERM, then SIGKILL)
	Forget             // Action.ID exited: drop it (delete its job)
)

var kindNames = [...]string{"Start", "Drain", "Stop", "Forget"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Action is one step for the controller to take.
type Action struct {
	Kind     Kind
	ID       string // Drain, Stop, Forget
	Revision string // Start
	Reason   string
}

func (a Action) String() string {
	if a.Kind == Start {
		return fmt.Sprintf("Start %s (%s)", a.Revision, a.Reason)
	}
	return fmt.Sprintf("%s %s (%s)", a.Kind, a.ID, a.Reason)
}

// Status summarises a deployment's replicas for the API and dashboard.
type Status struct {
	Revision string `json:"revision"`
	Desired  int    `json:"desired"`
	// Updated counts live replicas of the desired revision, UpdatedReady
	// the ready ones among them; Ready counts ready replicas of any
	// revision; Old counts live replicas of other revisions.
	Updated      int `json:"updated"`
	UpdatedReady int `json:"updatedReady"`
	Ready        int `json:"ready"`
	Old          int `json:"old"`
	Draining     int `json:"draining"`
	// Complete: exactly Desired replicas, all of the desired revision and
	// ready, nothing draining.
	Complete bool `json:"complete"`
	// Failures counts consecutive failed starts of the desired revision;
	// RetryAt is when the next start is allowed.
	Failures int       `json:"failures,omitempty"`
	RetryAt  time.Time `json:"retryAt,omitzero"`
	Message  string    `json:"message,omitempty"`
}

// Backoff bounds restarts of a revision whose replicas crash.
type Backoff struct {
	Base, Max time.Duration
}

// DefaultBackoff replaces the first crash at once, then waits 1s and
// doubles up to 5m, like a crash-looping pod.
var DefaultBackoff = Backoff{Base: time.Second, Max: 5 * time.Minute}

// Planner remembers what the replicas cannot tell: how often each revision
// failed to start. Everything else is read from the observed replicas.
type Planner struct {
	backoff  Backoff
	failures map[string]int       // consecutive crashes per revision
	retryAt  map[string]time.Time // no start of the revision before this
	counted  map[string]bool      // crashed replica IDs already counted
}

// NewPlanner makes a planner; a zero Backoff takes DefaultBackoff.
func NewPlanner(b Backoff) *Planner {
	if b.Base <= 0 {
		b.Base = DefaultBackoff.Base
	}
	if b.Max < b.Base {
		b.Max = max(DefaultBackoff.Max, b.Base)
	}
	return &Planner{backoff: b, failures: map[string]int{}, retryAt: map[string]time.Time{}, counted: map[string]bool{}}
}

func (s *Spec) defaults() {
	if s.MaxSurge <= 0 {
		s.MaxSurge = DefaultMaxSurge
	}
	if s.DrainTimeout <= 0 {
		s.DrainTimeout = DefaultDrainTimeout
	}
	if s.Replicas < 0 {
		s.Replicas = 0
	}
}

// Plan returns the actions that move the replicas towards spec, and where
// the deployment stands. The replicas slice is not modified.
func (p *Planner) Plan(now time.Time, spec Spec, replicas []Replica) ([]Action, Status) {
	spec.defaults()
	var acts []Action
	var newLive, oldLive []Replica
	holders := 0 // replicas holding GPUs once this plan is applied
	present := make(map[string]bool, len(replicas))
	for _, r := range replicas {
		present[r.ID] = true
		switch r.State {
		case Exited:
			if r.Failed && !p.counted[r.ID] {
				p.counted[r.ID] = true
				p.failed(now, r.Revision)
			}
			acts = append(acts, Action{Kind: Forget, ID: r.ID, Reason: exitReason(r)})
		case Stopping:
			holders++
		case Draining:
			holders++
			switch {
			case r.InFlight == 0:
				acts = append(acts, Action{Kind: Stop, ID: r.ID, Reason: "drained"})
			case now.Sub(r.Since) >= spec.DrainTimeout:
				acts = append(acts, Action{Kind: Stop, ID: r.ID, Reason: fmt.Sprintf("drain timeout %v with %d requests in flight", spec.DrainTimeout, r.InFlight)})
			}
		default:
			if r.State == Ready {
				// A replica that made it to ready ends its revision's crash loop.
				delete(p.failures, r.Revision)
				delete(p.retryAt, r.Revision)
			}
			if r.Revision == spec.Revision {
				newLive = append(newLive, r)
			} else {
				oldLive = append(oldLive, r)
			}
		}
	}
	for id := range p.counted {
		if !present[id] {
			delete(p.counted, id)
		}
	}
	drain := func(r Replica, why string) {
		acts = append(acts, Action{Kind: Drain, ID: r.ID, Reason: why})
		holders++
	}

	// Replicas that have not been ready for ReadyTimeout (never after
	// starting, or not since they went unready: a wedged server) are
	// replaced.
	if spec.ReadyTimeout > 0 {
		newLive = slices.DeleteFunc(newLive, func(r Replica) bool {
			if r.State != Ready && now.Sub(r.Since) >= spec.ReadyTimeout {
				drain(r, fmt.Sprintf("%s for %v", r.State, spec.ReadyTimeout))
				p.failed(now, r.Revision)
				return true
			}
			return false
		})
	}
	// Old replicas that serve nothing go at once.
	oldLive = slices.DeleteFunc(oldLive, func(r Replica) bool {
		if r.State != Ready {
			drain(r, fmt.Sprintf("old revision %s, %s", r.Revision, r.State))
			return true
		}
		return false
	})
	// Too many of the desired revision (scale-down): not-ready ones
	// first, then the least busy, newest first.
	if extra := len(newLive) - spec.Replicas; extra > 0 {
		slices.SortStableFunc(newLive, drainOrder)
		for _, r := range newLive[:extra] {
			drain(r, fmt.Sprintf("scale down to %d", spec.Replicas))
		}
		newLive = newLive[extra:]
	}
	ready := countReady(newLive) + countReady(oldLive)
	// Old replicas go one by one while the ready ones left are enough.
	slices.SortStableFunc(oldLive, drainOrder)
	kept := oldLive[:0:0]
	for _, r := range oldLive {
		if ready-1 >= spec.Replicas {
			drain(r, fmt.Sprintf("replaced by revision %s", spec.Revision))
			ready--
			continue
		}
		kept = append(kept, r)
	}
	oldLive = kept
	holders += len(newLive) + len(oldLive)

	// Start replicas of the desired revision.
	want := spec.Replicas - len(newLive)
	retry, backingOff := p.retryAt[spec.Revision]
	backingOff = backingOff && now.Before(retry)
	if want > 0 && !backingOff {
		n := want
		if len(oldLive) > 0 {
			// A rolling update: at most MaxSurge above the desired count.
			n = min(n, spec.Replicas+spec.MaxSurge-holders)
		}
		reason := fmt.Sprintf("scale up to %d", spec.Replicas)
		if len(oldLive) > 0 {
			reason = fmt.Sprintf("rolling update to %s (surge %d)", spec.Revision, spec.MaxSurge)
		}
		for range max(n, 0) {
			acts = append(acts, Action{Kind: Start, Revision: spec.Revision, Reason: reason})
		}
		newLive = append(newLive, make([]Replica, max(n, 0))...) // counted as Starting below
	}

	st := Status{
		Revision: spec.Revision, Desired: spec.Replicas,
		Updated: len(newLive), UpdatedReady: countReady(newLive),
		Ready: countReady(newLive) + countReady(oldLive), Old: len(oldLive),
		Failures: p.failures[spec.Revision],
	}
	for _, a := range acts {
		if a.Kind == Drain {
			st.Draining++
		}
	}
	for _, r := range replicas {
		if r.State == Draining || r.State == Stopping {
			st.Draining++
		}
	}
	st.Complete = st.Old == 0 && st.Updated == spec.Replicas && st.UpdatedReady == spec.Replicas && st.Draining == 0 && len(acts) == 0
	if backingOff {
		st.RetryAt = retry
		st.Message = fmt.Sprintf("revision %s: %d replicas crashed in a row; next start at %s", spec.Revision, st.Failures, retry.Format(time.RFC3339))
	} else if st.Old > 0 {
		st.Message = fmt.Sprintf("rolling update to %s: %d of %d updated and ready", spec.Revision, st.UpdatedReady, spec.Replicas)
	}
	return acts, st
}

func (p *Planner) failed(now time.Time, rev string) {
	// The first crash is replaced at once (a killed process, a lost
	// node); from the second in a row the wait doubles.
	p.failures[rev]++
	f := p.failures[rev]
	if f == 1 {
		p.retryAt[rev] = now
		return
	}
	d := p.backoff.Base << min(f-2, 30)
	if d > p.backoff.Max || d <= 0 {
		d = p.backoff.Max
	}
	p.retryAt[rev] = now.Add(d)
}

func exitReason(r Replica) string {
	if r.Failed {
		return "crashed"
	}
	return "exited"
}

func countReady(rs []Replica) int {
	n := 0
	for _, r := range rs {
		if r.State == Ready {
			n++
		}
	}
	return n
}

// drainOrder puts first the replica that costs least to drain: not ready
// before ready, then fewest requests in flight, then the newest, then by
// ID so the order is total.
func drainOrder(a, b Replica) int {
	ra, rb := a.State == Ready, b.State == Ready
	if ra != rb {
		if rb {
			return -1
		}
		return 1
	}
	if c := cmp.Compare(a.InFlight, b.InFlight); c != 0 {
		return c
	}
	if c := b.Since.Compare(a.Since); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}
