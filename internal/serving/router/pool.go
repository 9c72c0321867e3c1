package router

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var (
	errQueueFull    = errors.New("queue full")
	errQueueTimeout = errors.New("no ready replica in time")
	errClosed       = errors.New("deployment removed")
)

// epoch anchors the monotonic clock of the load counters.
var epoch = time.Now()

func nowNs() int64 { return int64(time.Since(epoch)) }

// endpoint is one replica in a pool. Fields below mu are guarded by the
// pool's mutex.
type endpoint struct {
	id, addr  string
	up        *upstream       // requests
	transport *http.Transport // health checks and upgrades
	kick      chan struct{}   // asks the health loop for a check now
	stop      chan struct{}   // closed when the endpoint leaves the pool

	inflight int
	draining bool
	healthy  bool // passed its last checks
	ejected  bool // failed a request; back at its next passing check
	// after ejectUntil (outlier ejection: a replica that passes checks
	// but keeps failing requests stays out longer each time)
	ejectUntil   int64
	passiveFails int // consecutive failed requests
	removed      bool
	fails        int // consecutive failed checks
	requests     uint64
	failures     uint64
	lastErr      string
}

func (e *endpoint) eligible(limit int) bool {
	return e.healthy && !e.ejected && !e.draining && !e.removed && (limit == 0 || e.inflight < limit)
}

// waiter is a request queued for a replica.
type waiter struct {
	ch    chan *endpoint // buffered: the dispatcher never blocks
	avoid []*endpoint
}

// pool is one deployment: its replicas, its queue and its load counters.
type pool struct {
	name string
	log  *slog.Logger
	m    *poolMetrics

	opts atomic.Pointer[Options]

	mu      sync.Mutex
	eps     []*endpoint // sorted by ID
	rr      int
	waiters []*waiter
	closed  bool

	inflight, queued int
	lastNs           int64
	concNs           float64 // ∫ (inflight+queued) dt, in request·ns
	queueWaitNs      int64
	dispatched       uint64
}

func newPool(name string, opts Options, m *poolMetrics, log *slog.Logger) *pool {
	p := &pool{name: name, m: m, log: log, lastNs: nowNs()}
	p.opts.Store(&opts)
	return p
}

// tickLocked advances the concurrency integral to now; call it before
// changing inflight or queued.
func (p *pool) tickLocked() {
	now := nowNs()
	p.concNs += float64(p.inflight+p.queued) * float64(now-p.lastNs)
	p.lastNs = now
}

func (p *pool) takeLocked(e *endpoint) {
	p.tickLocked()
	e.inflight++
	p.inflight++
	p.dispatched++
}

// pickLocked returns the eligible replica with the fewest requests in
// flight, preferring those not in avoid (replicas this request already
// failed on); ties rotate. Nil when no replica is eligible.
func (p *pool) pickLocked(avoid []*endpoint) *endpoint {
	n := len(p.eps)
	if n == 0 {
		return nil
	}
	limit := p.opts.Load().MaxInflightPerReplica
	var best, fallback *endpoint
	start := p.rr % n
	p.rr++
	for i := range n {
		j := start + i
		if j >= n {
			j -= n
		}
		e := p.eps[j]
		if !e.eligible(limit) {
			continue
		}
		if len(avoid) > 0 && slices.Contains(avoid, e) {
			if fallback == nil || e.inflight < fallback.inflight {
				fallback = e
			}
			continue
		}
		if best == nil || e.inflight < best.inflight {
			best = e
		}
	}
	if best == nil {
		return fallback
	}
	return best
}

// dispatchLocked hands free replicas to queued requests, first come first
// served.
func (p *pool) dispatchLocked() {
	for len(p.waiters) > 0 {
		w := p.waiters[0]
		e := p.pickLocked(w.avoid)
		if e == nil {
			return
		}
		p.waiters = p.waiters[1:]
		p.tickLocked()
		p.queued--
		p.takeLocked(e)
		w.ch <- e
	}
}

// acquire returns a replica for a request, waiting in the queue when none
// is free; wait is the time spent queued.
func (p *pool) acquire(ctx context.Context, avoid []*endpoint) (e *endpoint, wait time.Duration, err error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, 0, errClosed
	}
	if e := p.pickLocked(avoid); e != nil {
		p.takeLocked(e)
		p.mu.Unlock()
		return e, 0, nil
	}
	o := p.opts.Load()
	if len(p.waiters) >= o.MaxQueue {
		p.mu.Unlock()
		return nil, 0, errQueueFull
	}
	w := &waiter{ch: make(chan *endpoint, 1), avoid: avoid}
	p.waiters = append(p.waiters, w)
	p.tickLocked()
	p.queued++
	timeout := o.QueueTimeout
	p.mu.Unlock()

	start := time.Now()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case e = <-w.ch:
	case <-ctx.Done():
		err = ctx.Err()
	case <-t.C:
		err = errQueueTimeout
	}
	wait = time.Since(start)
	if err == nil {
		return p.handed(e, wait)
	}
	p.mu.Lock()
	if i := slices.Index(p.waiters, w); i >= 0 {
		p.waiters = slices.Delete(p.waiters, i, i+1)
		p.tickLocked()
		p.queued--
		p.mu.Unlock()
		return nil, wait, err
	}
	p.mu.Unlock()
	// A replica was handed over as we gave up: use it unless the client
	// has gone.
	e = <-w.ch
	if e != nil && ctx.Err() != nil {
		p.release(e, false, "")
		return nil, wait, ctx.Err()
	}
	return p.handed(e, wait)
}

func (p *pool) handed(e *endpoint, wait time.Duration) (*endpoint, time.Duration, error) {
	if e == nil {
		return nil, wait, errClosed
	}
	p.mu.Lock()
	p.queueWaitNs += int64(wait)
	p.mu.Unlock()
	return e, wait, nil
}

// Outlier ejection: the second failed request in a row keeps a replica
// out for ejectBase, doubling with each further one up to ejectMax, even if
// its checks pass.
const (
	ejectBase = 250 * time.Millisecond
	ejectMax  = 30 * time.Second
)

// release ends a request on e; failed ejects e until its next passing
// check (why says what failed).
func (p *pool) release(e *endpoint, failed bool, why string) {
	p.mu.Lock()
	p.tickLocked()
	e.inflight--
	p.inflight--
	e.requests++
	kick := false
	if failed {
		e.failures++
		e.lastErr = why
		e.passiveFails++
		if n := e.passiveFails; n >= 2 {
			e.ejectUntil = nowNs() + int64(min(ejectBase<<min(n-2, 16), ejectMax))
		}
		if !e.ejected && !e.removed {
			e.ejected, kick = true, true
		}
	} else {
		e.passiveFails = 0
	}
	closeIdle := e.removed && e.inflight == 0
	if len(p.waiters) > 0 {
		p.dispatchLocked()
	}
	p.mu.Unlock()
	if kick {
		p.log.Warn("replica failed a request; ejected until its next passing check", "replica", e.id, "addr", e.addr, "error", why)
		select {
		case e.kick <- struct{}{}:
		default:
		}
	}
	if closeIdle {
		e.closeConns()
	}
}

// closeConns closes a removed replica's idle connections.
func (e *endpoint) closeConns() {
	e.up.closeIdle(true)
	e.transport.CloseIdleConnections()
}

func (p *pool) newEndpoint(ep Endpoint) *endpoint {
	o := p.opts.Load()
	d := &net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}
	return &endpoint{
		id: ep.ID, addr: ep.Addr, draining: ep.Draining,
		up:   newUpstream(ep.Addr, o),
		kick: make(chan struct{}, 1), stop: make(chan struct{}),
		transport: &http.Transport{
			// No Proxy: replicas are reached directly, whatever the
			// environment of the server says.
			DialContext:           d.DialContext,
			MaxIdleConns:          0,
			MaxIdleConnsPerHost:   o.MaxIdleConnsPerReplica,
			IdleConnTimeout:       90 * time.Second,
			DisableCompression:    true, // pass Accept-Encoding through untouched
			ResponseHeaderTimeout: o.ResponseHeaderTimeout,
			ExpectContinueTimeout: time.Second,
			WriteBufferSize:       16 << 10,
			ReadBufferSize:        16 << 10,
		},
	}
}

// setEndpoints makes the pool's replicas eps.
func (p *pool) setEndpoints(eps []Endpoint) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	cur := make(map[string]*endpoint, len(p.eps))
	for _, e := range p.eps {
		cur[e.id] = e
	}
	next := make([]*endpoint, 0, len(eps))
	var started []*endpoint
	for _, ep := range eps {
		if e, ok := cur[ep.ID]; ok && e.addr == ep.Addr {
			if ep.Draining && !e.draining {
				p.log.Info("draining replica", "replica", e.id, "inflight", e.inflight)
			}
			e.draining = ep.Draining
			next = append(next, e)
			delete(cur, ep.ID)
			continue
		}
		e := p.newEndpoint(ep)
		next = append(next, e)
		started = append(started, e)
	}
	for _, e := range cur {
		p.removeLocked(e)
	}
	slices.SortFunc(next, func(a, b *endpoint) int { return strings.Compare(a.id, b.id) })
	p.eps = next
	p.mu.Unlock()
	for _, e := range started {
		go p.checkLoop(e)
	}
}

func (p *pool) removeLocked(e *endpoint) {
	if e.removed {
		return
	}
	e.removed = true
	close(e.stop)
	if e.inflight == 0 {
		go e.closeConns()
	}
}

func (p *pool) drain(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.eps {
		if e.id == id {
			e.draining = true
			return true
		}
	}
	return false
}

func (p *pool) setOptions(o Options) {
	p.opts.Store(&o)
	p.mu.Lock()
	if len(p.waiters) > 0 {
		p.dispatchLocked()
	}
	p.mu.Unlock()
}

func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, e := range p.eps {
		p.removeLocked(e)
	}
	p.eps = nil
	for _, w := range p.waiters {
		w.ch <- nil
	}
	p.tickLocked()
	p.queued -= len(p.waiters)
	p.waiters = nil
}

// Snapshot is a deployment's replicas and load, for the autoscaler (which
// takes differences of the counters between two snapshots), the rollout
// planner and the API.
type Snapshot struct {
	Replicas []ReplicaStatus
	// InFlight and Queued are the requests now at replicas and waiting.
	InFlight, Queued int
	// ConcurrencySeconds is ∫ (in flight + queued) dt since the deployment
	// was added: its difference over an interval divided by the interval
	// is the mean concurrency, with no sample missed.
	ConcurrencySeconds float64
	// QueueWaitSeconds is the total time requests waited for a replica;
	// Dispatched counts requests (attempts) that got one.
	QueueWaitSeconds float64
	Dispatched       uint64
	// At is when the snapshot was taken (monotonic clock of the router).
	At time.Duration
}

// ReplicaStatus is one replica as the router sees it.
type ReplicaStatus struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	Ready    bool   `json:"ready"` // in the rotation unless draining
	Draining bool   `json:"draining,omitempty"`
	InFlight int    `json:"inFlight"`
	Requests uint64 `json:"requests"`
	Failures uint64 `json:"failures,omitempty"`
	// LastError is the last failed check or request.
	LastError string `json:"lastError,omitempty"`
}

func (p *pool) snapshot() Snapshot {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tickLocked()
	s := Snapshot{
		InFlight: p.inflight, Queued: p.queued,
		ConcurrencySeconds: p.concNs / 1e9, QueueWaitSeconds: float64(p.queueWaitNs) / 1e9,
		Dispatched: p.dispatched, At: time.Duration(p.lastNs),
		Replicas: make([]ReplicaStatus, len(p.eps)),
	}
	for i, e := range p.eps {
		s.Replicas[i] = ReplicaStatus{
			ID: e.id, Addr: e.addr, Ready: e.healthy && !e.ejected, Draining: e.draining,
			InFlight: e.inflight, Requests: e.requests, Failures: e.failures, LastError: e.lastErr,
		}
	}
	return s
}
