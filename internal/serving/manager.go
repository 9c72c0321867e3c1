package serving

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"gpucloud/internal/serving/router"
)

// Manager runs every deployment of a server over one router and one
// driver: what the server embeds.
type Manager struct {
	router *router.Router
	driver Driver
	log    *slog.Logger

	mu    sync.Mutex
	ctrls map[string]*Controller
}

// NewManager makes a manager with no deployments.
func NewManager(rt *router.Router, d Driver, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.Default()
	}
	return &Manager{router: rt, driver: d, log: log, ctrls: map[string]*Controller{}}
}

// Router is the manager's router, to mount at /v1/deployments/.
func (m *Manager) Router() *router.Router { return m.router }

// Apply creates a deployment or changes it.
func (m *Manager) Apply(spec Spec) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.ctrls[spec.Name]; ok {
		return c.SetSpec(spec)
	}
	c, err := NewController(spec, m.router, m.driver, m.log)
	if err != nil {
		return err
	}
	m.ctrls[spec.Name] = c
	return nil
}

// Delete scales a deployment to nothing and forgets it once its replicas
// are gone. It reports whether the deployment existed.
func (m *Manager) Delete(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.ctrls[name]
	if ok {
		c.Delete()
	}
	return ok
}

// Status returns one deployment's status.
func (m *Manager) Status(name string) (Status, bool) {
	m.mu.Lock()
	c, ok := m.ctrls[name]
	m.mu.Unlock()
	if !ok {
		return Status{}, false
	}
	return c.Status(), true
}

// List returns every deployment's status, by name.
func (m *Manager) List() []Status {
	m.mu.Lock()
	cs := make([]*Controller, 0, len(m.ctrls))
	for _, c := range m.ctrls {
		cs = append(cs, c)
	}
	m.mu.Unlock()
	out := make([]Status, len(cs))
	for i, c := range cs {
		out[i] = c.Status()
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Step steps every deployment and drops the deleted ones whose replicas
// are gone.
func (m *Manager) Step(ctx context.Context, now time.Time) error {
	m.mu.Lock()
	cs := make(map[string]*Controller, len(m.ctrls))
	for k, v := range m.ctrls {
		cs[k] = v
	}
	m.mu.Unlock()
	var errs []error
	for name, c := range cs {
		if err := c.Step(ctx, now); err != nil {
			errs = append(errs, err)
		}
		if c.Status().Deleted {
			m.mu.Lock()
			if m.ctrls[name] == c {
				delete(m.ctrls, name)
			}
			m.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}

// Run steps every interval until ctx ends.
func (m *Manager) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := m.Step(ctx, time.Now()); err != nil && ctx.Err() == nil {
			m.log.Warn("serving step failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
