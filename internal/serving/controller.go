package serving

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"gpucloud/internal/serving/autoscale"
	"gpucloud/internal/serving/rollout"
	"gpucloud/internal/serving/router"
)

// Controller runs one deployment: replicas through its Driver, traffic
// through the Router. Call Step periodically (Run does), with the time.
type Controller struct {
	router *router.Router
	driver Driver
	log    *slog.Logger

	mu       sync.Mutex
	spec     Spec
	revision string
	scaler   *autoscale.Autoscaler // nil without autoscaling
	planner  *rollout.Planner
	desired  int
	started  bool // desired initialised from what runs
	deleting bool
	reps     map[string]*tracked
	last     *router.Snapshot
	status   Status
}

// tracked is what the controller remembers of a replica beyond what the
// driver reports: its rollout state and since when.
type tracked struct {
	state rollout.State
	since time.Time
}

// Status is a deployment's state for the API and the dashboard.
type Status struct {
	Name     string `json:"name"`
	Revision string `json:"revision"`
	Desired  int    `json:"desired"`
	// Scale is the autoscaler's last decision and its reason.
	Scale    autoscale.Decision `json:"scale"`
	Rollout  rollout.Status     `json:"rollout"`
	Replicas []ReplicaStatus    `json:"replicas"`
	InFlight int                `json:"inFlight"`
	Queued   int                `json:"queued"`
	// Deleted: the deployment was deleted and every replica is gone.
	Deleted bool   `json:"deleted,omitempty"`
	Error   string `json:"error,omitempty"`
}

// ReplicaStatus is one replica in a Status.
type ReplicaStatus struct {
	router.ReplicaStatus
	Revision string `json:"revision"`
	Phase    Phase  `json:"phase"`
	State    string `json:"state"`
}

// NewController makes the controller of spec and adds the deployment to
// the router.
func NewController(spec Spec, rt *router.Router, d Driver, log *slog.Logger) (*Controller, error) {
	if log == nil {
		log = slog.Default()
	}
	c := &Controller{router: rt, driver: d, log: log.With("deployment", spec.Name), planner: rollout.NewPlanner(rollout.Backoff{}), reps: map[string]*tracked{}}
	if err := c.SetSpec(spec); err != nil {
		return nil, err
	}
	return c, nil
}

// SetSpec changes the deployment. A new template starts a rolling update;
// new bounds or autoscaling take effect at the next Step.
func (c *Controller) SetSpec(spec Spec) error {
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("deployment %s: %w", spec.Name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.spec.Name != "" && spec.Name != c.spec.Name {
		return fmt.Errorf("deployment %s: cannot rename to %s", c.spec.Name, spec.Name)
	}
	if err := c.router.SetDeployment(spec.Name, spec.Router); err != nil {
		return err
	}
	if spec.Autoscale != nil {
		cfg := *spec.Autoscale
		cfg.Min, cfg.Max = spec.Min, spec.Max
		if c.scaler == nil {
			s, err := autoscale.New(cfg)
			if err != nil {
				return err
			}
			c.scaler = s
		} else if err := c.scaler.SetConfig(cfg); err != nil {
			return err
		}
	} else {
		c.scaler = nil
	}
	rev := spec.Template.Revision()
	if c.revision != "" && rev != c.revision {
		c.log.Info("rolling update", "from", c.revision, "to", rev)
	}
	c.spec, c.revision = spec, rev
	return nil
}

// Delete scales the deployment to nothing; once every replica is gone
// Status().Deleted is true and the router has forgotten it.
func (c *Controller) Delete() {
	c.mu.Lock()
	c.deleting = true
	c.mu.Unlock()
}

// Status returns the state as of the last Step.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status
	s.Replicas = append([]ReplicaStatus(nil), s.Replicas...)
	return s
}

// Run steps every interval until ctx ends.
func (c *Controller) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := c.Step(ctx, time.Now()); err != nil && ctx.Err() == nil {
			c.log.Warn("deployment step failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Step observes the replicas and the load, and acts: one turn of the
// control loop at time now.
func (c *Controller) Step(ctx context.Context, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status.Deleted {
		return nil
	}
	spec := c.spec
	reps, err := c.driver.Replicas(ctx, spec.Name)
	if err != nil {
		c.status.Error = err.Error()
		return fmt.Errorf("listing replicas: %w", err)
	}

	// The router gets every running replica that is not being stopped.
	eps := make([]router.Endpoint, 0, len(reps))
	for _, r := range reps {
		t := c.track(r, now)
		if r.Phase == Running && r.Addr != "" && t.state != rollout.Stopping {
			eps = append(eps, router.Endpoint{ID: r.ID, Addr: r.Addr, Draining: t.state == rollout.Draining})
		}
	}
	for id := range c.reps {
		if !hasReplica(reps, id) {
			delete(c.reps, id)
		}
	}
	if err := c.router.SetEndpoints(spec.Name, eps); err != nil {
		return err
	}
	snap, _ := c.router.Snapshot(spec.Name)
	ready := map[string]router.ReplicaStatus{}
	for _, rs := range snap.Replicas {
		ready[rs.ID] = rs
	}

	// Readiness moves Starting/Ready/Unready.
	for _, r := range reps {
		t := c.reps[r.ID]
		rs, inRouter := ready[r.ID]
		switch {
		case t.state == rollout.Starting && inRouter && rs.Ready:
			t.state, t.since = rollout.Ready, now
		case t.state == rollout.Ready && !(inRouter && rs.Ready):
			t.state, t.since = rollout.Unready, now
		case t.state == rollout.Unready && inRouter && rs.Ready:
			t.state, t.since = rollout.Ready, now
		}
	}

	c.scale(spec, reps, snap, now)

	desired := c.desired
	if c.deleting {
		desired = 0
	}
	in := make([]rollout.Replica, 0, len(reps))
	for _, r := range reps {
		t := c.reps[r.ID]
		in = append(in, rollout.Replica{ID: r.ID, Revision: r.Revision, State: t.state, Since: t.since, InFlight: ready[r.ID].InFlight, Failed: r.Failed})
	}
	acts, rst := c.planner.Plan(now, rollout.Spec{
		Revision: c.revision, Replicas: desired,
		MaxSurge: spec.MaxSurge, DrainTimeout: spec.DrainTimeout, ReadyTimeout: spec.ReadyTimeout,
	}, in)
	var errs []error
	for _, a := range acts {
		if err := c.apply(ctx, spec, a, now); err != nil {
			errs = append(errs, fmt.Errorf("%v: %w", a, err))
		}
	}

	c.status = Status{
		Name: spec.Name, Revision: c.revision, Desired: desired, Scale: c.status.Scale, Rollout: rst,
		InFlight: snap.InFlight, Queued: snap.Queued,
	}
	for _, r := range reps {
		t, ok := c.reps[r.ID]
		if !ok {
			continue // forgotten in this step
		}
		rs := ReplicaStatus{ReplicaStatus: ready[r.ID], Revision: r.Revision, Phase: r.Phase, State: t.state.String()}
		rs.ID = r.ID
		c.status.Replicas = append(c.status.Replicas, rs)
	}
	if c.deleting && len(reps) == 0 {
		c.router.RemoveDeployment(spec.Name)
		c.status.Deleted = true
	}
	if err := errors.Join(errs...); err != nil {
		c.status.Error = err.Error()
		return err
	}
	return nil
}

// track returns the controller's record of r, updated for what the driver
// says.
func (c *Controller) track(r Replica, now time.Time) *tracked {
	t, ok := c.reps[r.ID]
	if !ok {
		// A replica the controller did not start (a restarted server):
		// it is starting until the router finds it ready.
		t = &tracked{state: rollout.Starting, since: now}
		c.reps[r.ID] = t
	}
	if r.Phase == Exited && t.state != rollout.Exited {
		t.state, t.since = rollout.Exited, now
	}
	return t
}

func hasReplica(reps []Replica, id string) bool {
	for _, r := range reps {
		if r.ID == id {
			return true
		}
	}
	return false
}

// scale feeds the autoscaler the load since the last step and sets the
// desired count.
func (c *Controller) scale(spec Spec, reps []Replica, snap router.Snapshot, now time.Time) {
	if !c.started {
		// Adopt what runs (a restarted controller), within bounds.
		n := 0
		for _, r := range reps {
			if r.Phase != Exited && r.Revision == c.revision {
				n++
			}
		}
		c.desired = max(spec.Min, min(n, spec.Max))
		c.started = true
	}
	if c.scaler == nil {
		c.desired = spec.Min
		c.status.Scale = autoscale.Decision{Replicas: spec.Min, Raw: spec.Min, Reason: "no autoscaling: min replicas"}
		c.last = &snap
		return
	}
	if c.last != nil && snap.At > c.last.At {
		o := autoscale.Observation{
			Time:        now,
			Interval:    snap.At - c.last.At,
			Concurrency: (snap.ConcurrencySeconds - c.last.ConcurrencySeconds) / (snap.At - c.last.At).Seconds(),
			Requests:    int(snap.Dispatched - c.last.Dispatched),
		}
		if o.Requests > 0 {
			o.QueueTime = time.Duration((snap.QueueWaitSeconds - c.last.QueueWaitSeconds) / float64(o.Requests) * float64(time.Second))
		}
		c.scaler.Observe(o)
	}
	c.last = &snap
	d := c.scaler.Recommend(now, c.desired)
	if d.Replicas != c.desired {
		c.log.Info("scaling", "from", c.desired, "to", d.Replicas, "reason", d.Reason)
	}
	c.desired = d.Replicas
	c.status.Scale = d
}

func (c *Controller) apply(ctx context.Context, spec Spec, a rollout.Action, now time.Time) error {
	switch a.Kind {
	case rollout.Start:
		id, err := c.driver.Start(ctx, ReplicaSpec{Deployment: spec.Name, Tenant: spec.Tenant, Revision: a.Revision, Template: spec.Template})
		if err != nil {
			return err
		}
		c.reps[id] = &tracked{state: rollout.Starting, since: now}
		c.log.Info("replica started", "replica", id, "revision", a.Revision, "reason", a.Reason)
	case rollout.Drain:
		t := c.reps[a.ID]
		t.state, t.since = rollout.Draining, now
		c.router.Drain(spec.Name, a.ID)
		c.log.Info("replica draining", "replica", a.ID, "reason", a.Reason)
	case rollout.Stop:
		if err := c.driver.Stop(ctx, a.ID); err != nil {
			return err
		}
		t := c.reps[a.ID]
		t.state, t.since = rollout.Stopping, now
		c.log.Info("replica stopping", "replica", a.ID, "reason", a.Reason)
	case rollout.Forget:
		if err := c.driver.Forget(ctx, a.ID); err != nil {
			return err
		}
		delete(c.reps, a.ID)
		c.log.Info("replica gone", "replica", a.ID, "reason", a.Reason)
	}
	return nil
}
