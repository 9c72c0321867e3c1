package serving

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"gpucloud/internal/serving/autoscale"
	"gpucloud/internal/serving/router"
)

// memDriver runs replicas as in-process HTTP servers.
type memDriver struct {
	mu   sync.Mutex
	seq  int
	reps map[string]*memReplica
}

type memReplica struct {
	r   Replica
	srv *httptest.Server
}

func newMemDriver() *memDriver { return &memDriver{reps: map[string]*memReplica{}} }

func (d *memDriver) Start(ctx context.Context, s ReplicaSpec) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	id := fmt.Sprintf("%s-%d", s.Deployment, d.seq)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, id) }))
	d.reps[id] = &memReplica{r: Replica{ID: id, Deployment: s.Deployment, Revision: s.Revision, Phase: Running, Addr: strings.TrimPrefix(srv.URL, "http://")}, srv: srv}
	return id, nil
}

func (d *memDriver) Stop(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.reps[id]
	m.srv.Close()
	m.r.Phase = Exited
	return nil
}

func (d *memDriver) Forget(ctx context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.reps, id)
	return nil
}

func (d *memDriver) Replicas(ctx context.Context, dep string) ([]Replica, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Replica
	for _, m := range d.reps {
		if m.r.Deployment == dep {
			out = append(out, m.r)
		}
	}
	return out, nil
}

func (d *memDriver) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range d.reps {
		m.srv.Close()
	}
}

func memSpec(min, max int) Spec {
	return Spec{
		Name: "m", Template: Template{Command: []string{"srv"}}, Min: min, Max: max,
		Router: router.Options{StartupInterval: 5 * time.Millisecond, CheckInterval: 20 * time.Millisecond},
	}
}

// stepUntil steps the controller until cond holds.
func stepUntil(t *testing.T, c *Controller, what string, cond func(Status) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := c.Step(context.Background(), time.Now()); err != nil {
			t.Fatal(err)
		}
		if cond(c.Status()) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %+v", what, c.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func countState(s Status, state string) int {
	n := 0
	for _, r := range s.Replicas {
		if r.State == state {
			n++
		}
	}
	return n
}

func TestControllerScalesToMinAndDeletes(t *testing.T) {
	d := newMemDriver()
	defer d.close()
	rt := router.New(router.Config{Logger: slog.New(slog.DiscardHandler)})
	defer rt.Close()
	c, err := NewController(memSpec(2, 4), rt, d, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	stepUntil(t, c, "2 ready", func(s Status) bool { return countState(s, "Ready") == 2 && s.Rollout.Complete })
	if s := c.Status(); s.Desired != 2 || !strings.Contains(s.Scale.Reason, "no autoscaling") {
		t.Fatalf("status %+v", s)
	}
	// A new min without a new template scales, without a rollout.
	rev := c.Status().Revision
	if err := c.SetSpec(memSpec(3, 4)); err != nil {
		t.Fatal(err)
	}
	stepUntil(t, c, "3 ready", func(s Status) bool { return countState(s, "Ready") == 3 })
	if c.Status().Revision != rev || d.seq != 3 {
		t.Fatalf("bounds change made a rollout: revision %s, %d replicas started", c.Status().Revision, d.seq)
	}
	c.Delete()
	stepUntil(t, c, "deletion", func(s Status) bool { return s.Deleted })
	if len(d.reps) != 0 {
		t.Fatalf("replicas left: %d", len(d.reps))
	}
	if _, ok := rt.Snapshot("m"); ok {
		t.Fatal("the router still has the deployment")
	}
}

// A controller that starts over replicas already running (a new leader)
// keeps them instead of scaling down to min and up again.
func TestControllerAdoptsRunningReplicas(t *testing.T) {
	d := newMemDriver()
	defer d.close()
	spec := memSpec(1, 5)
	spec.Autoscale = &autoscale.Config{TargetInflight: 4}
	for range 3 {
		d.Start(context.Background(), ReplicaSpec{Deployment: "m", Revision: spec.Template.Revision()})
	}
	rt := router.New(router.Config{Logger: slog.New(slog.DiscardHandler)})
	defer rt.Close()
	c, err := NewController(spec, rt, d, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	stepUntil(t, c, "3 ready", func(s Status) bool { return countState(s, "Ready") == 3 })
	// Idle, but the scale-down window (5m by default) has not passed.
	for range 5 {
		c.Step(context.Background(), time.Now())
	}
	if s := c.Status(); s.Desired != 3 || d.seq != 3 || countState(s, "Draining") != 0 {
		t.Fatalf("desired %d, %d started, status %+v", s.Desired, d.seq, s)
	}
}

func TestSpecValidate(t *testing.T) {
	bad := []Spec{
		{Template: Template{Command: []string{"x"}}, Min: 1, Max: 1},
		{Name: "m", Min: 1, Max: 1},
		{Name: "m", Template: Template{Command: []string{"x"}}, Min: 2, Max: 1},
		{Name: "m", Template: Template{Command: []string{"x"}}, Min: 1, Max: 2, Autoscale: &autoscale.Config{}},
		{Name: "m", Template: Template{Command: []string{"x"}}, Min: 1, Max: 2, Router: router.Options{Retry: "maybe"}},
	}
	for i, s := range bad {
		if err := s.Validate(); err == nil {
			t.Errorf("spec %d accepted: %+v", i, s)
		}
	}
}
