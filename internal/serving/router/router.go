// Package router is the HTTP front of inference deployments: it proxies
// /v1/deployments/NAME/... to the ready replicas of NAME, least in-flight
// first, with health checks, safe retries, draining and streaming
// (server-sent events are flushed as they arrive).
//
// The control plane feeds it the replicas that run (SetEndpoints) and which
// of them to drain; the router decides readiness itself (active checks of
// the readiness path, and a replica that fails a request is ejected until
// its next passing check) and reports per-deployment load (Snapshot) for
// the autoscaler and the rollout planner.
//
// # Retries
//
// A request is sent again, to another replica when there is one, only if
// all of these hold: no byte of the response has arrived from the replica
// that failed; the request body was buffered (bodies up to
// Options.MaxReplayBody; larger ones are streamed once); the client is
// still waiting; fewer than Options.Attempts attempts were made. Within
// that, Options.Retry says which requests:
//
//   - RetryAll (the default): any method. Inference calls (POST
//     /v1/completions and the like) are pure functions of their input, so
//     replaying one costs GPU time, not correctness.
//   - RetrySafe: requests that never reached a replica (the connection was
//     refused or timed out), idempotent methods (GET, HEAD, OPTIONS, TRACE,
//     PUT, DELETE), and requests with an Idempotency-Key header. Use it for
//     replicas whose POSTs have side effects.
//   - RetryNone: only requests that never reached a replica.
//
// A response that has started is never retried: a replica that dies in the
// middle of a stream ends the client's response with an error (the
// connection is aborted, so the client cannot mistake it for a whole one).
package router

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Retry policies (see the package documentation).
type RetryPolicy string

const (
	RetryAll  RetryPolicy = "all"
	RetrySafe RetryPolicy = "safe"
	RetryNone RetryPolicy = "none"
)

// Options configure one deployment in the router.
type Options struct {
	// ReadinessPath is checked with GET on each replica (2xx or 3xx is
	// ready); empty checks that the port accepts connections.
	ReadinessPath string
	// CheckInterval paces readiness checks of a ready replica (default
	// 1s); a replica not ready yet is checked every StartupInterval
	// (default 200ms) so it joins soon after its model is loaded.
	CheckInterval, StartupInterval time.Duration
	// CheckTimeout bounds one check (default 1s).
	CheckTimeout time.Duration
	// FailureThreshold consecutive failed checks take a ready replica out
	// (default 2).
	FailureThreshold int
	// MaxInflightPerReplica caps requests on one replica; further requests
	// wait in the router's queue (0: no cap; requests queue only while no
	// replica is ready).
	MaxInflightPerReplica int
	// MaxQueue bounds waiting requests (default 1000); QueueTimeout bounds
	// the wait (default 30s). Past either the router answers 503.
	MaxQueue     int
	QueueTimeout time.Duration
	// Retry, Attempts and MaxReplayBody: see the package documentation
	// (defaults RetryAll, 3 attempts, 1 MiB).
	Retry         RetryPolicy
	Attempts      int
	MaxReplayBody int64
	// ResponseHeaderTimeout bounds the wait for a replica's response
	// headers (0: none; a long prompt can take a while).
	ResponseHeaderTimeout time.Duration
	// DialTimeout bounds connecting to a replica (default 2s).
	DialTimeout time.Duration
	// MaxIdleConnsPerReplica keeps that many keep-alive connections per
	// replica (default 1024: under load, fewer means a new TCP connection
	// per request).
	MaxIdleConnsPerReplica int
	// ForwardAuthorization passes the client's Authorization header to the
	// replicas. Off by default: the caller's gpucloud token must not reach
	// user code.
	ForwardAuthorization bool
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.CheckInterval, time.Second)
	def(&o.StartupInterval, min(200*time.Millisecond, o.CheckInterval))
	def(&o.CheckTimeout, time.Second)
	def(&o.QueueTimeout, 30*time.Second)
	def(&o.DialTimeout, 2*time.Second)
	if o.FailureThreshold <= 0 {
		o.FailureThreshold = 2
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = 1000
	}
	if o.Retry == "" {
		o.Retry = RetryAll
	}
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	if o.MaxReplayBody <= 0 {
		o.MaxReplayBody = 1 << 20
	}
	if o.MaxIdleConnsPerReplica <= 0 {
		o.MaxIdleConnsPerReplica = 1024
	}
}

// Validate checks options (zero values take defaults).
func (o *Options) Validate() error {
	switch o.Retry {
	case "", RetryAll, RetrySafe, RetryNone:
	default:
		return fmt.Errorf("retry: must be %q, %q or %q", RetryAll, RetrySafe, RetryNone)
	}
	if o.ReadinessPath != "" && !strings.HasPrefix(o.ReadinessPath, "/") {
		return fmt.Errorf("readiness.path: must start with /")
	}
	if o.MaxInflightPerReplica < 0 || o.MaxQueue < 0 || o.Attempts < 0 || o.MaxReplayBody < 0 {
		return fmt.Errorf("limits must not be negative")
	}
	return nil
}

// Endpoint is one running replica as the control plane knows it.
type Endpoint struct {
	ID   string
	Addr string // host:port
	// Draining takes the replica out of the rotation; requests it holds
	// finish.
	Draining bool
}

// Config configures a Router.
type Config struct {
	// Prefix is the path before the deployment name (default
	// "/v1/deployments/").
	Prefix string
	Logger *slog.Logger
}

// Router routes requests to deployments' replicas. It is an http.Handler
// and a prometheus.Collector.
type Router struct {
	prefix  string
	log     *slog.Logger
	metrics *metrics

	mu    sync.Mutex                       // serialises changes to pools
	pools atomic.Pointer[map[string]*pool] // copy on write: read per request without a lock
}

// New makes a router with no deployments.
func New(cfg Config) *Router {
	if cfg.Prefix == "" {
		cfg.Prefix = "/v1/deployments/"
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Router{prefix: cfg.Prefix, log: cfg.Logger, metrics: newMetrics()}
	r.pools.Store(&map[string]*pool{})
	return r
}

// SetDeployment adds a deployment or changes its options. Endpoints and
// their state are kept.
func (rt *Router) SetDeployment(name string, opts Options) error {
	if err := opts.Validate(); err != nil {
		return fmt.Errorf("deployment %s: %w", name, err)
	}
	opts.defaults()
	rt.mu.Lock()
	defer rt.mu.Unlock()
	old := *rt.pools.Load()
	if p, ok := old[name]; ok {
		p.setOptions(opts)
		return nil
	}
	m := make(map[string]*pool, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[name] = newPool(name, opts, rt.metrics.forPool(name), rt.log.With("deployment", name))
	rt.pools.Store(&m)
	return nil
}

// RemoveDeployment forgets a deployment: new requests get 404, requests
// in flight finish, health checks stop.
func (rt *Router) RemoveDeployment(name string) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	old := *rt.pools.Load()
	p, ok := old[name]
	if !ok {
		return
	}
	m := make(map[string]*pool, len(old))
	for k, v := range old {
		if k != name {
			m[k] = v
		}
	}
	rt.pools.Store(&m)
	p.close()
	rt.metrics.remove(name)
}

// SetEndpoints replaces the replicas of a deployment. New ones are checked
// before they get requests; missing ones leave the rotation and keep the
// requests they hold.
func (rt *Router) SetEndpoints(name string, eps []Endpoint) error {
	p := rt.pool(name)
	if p == nil {
		return fmt.Errorf("no deployment %q", name)
	}
	p.setEndpoints(eps)
	return nil
}

// Drain takes one replica out of the rotation now (SetEndpoints with
// Draining does the same at the next sync).
func (rt *Router) Drain(name, id string) bool {
	p := rt.pool(name)
	return p != nil && p.drain(id)
}

// Snapshot returns a deployment's replicas and load counters.
func (rt *Router) Snapshot(name string) (Snapshot, bool) {
	p := rt.pool(name)
	if p == nil {
		return Snapshot{}, false
	}
	return p.snapshot(), true
}

// Deployments lists the deployments the router knows, sorted.
func (rt *Router) Deployments() []string {
	m := *rt.pools.Load()
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Close stops every health check.
func (rt *Router) Close() {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, p := range *rt.pools.Load() {
		p.close()
	}
	rt.pools.Store(&map[string]*pool{})
}

func (rt *Router) pool(name string) *pool {
	return (*rt.pools.Load())[name]
}

// ServeHTTP proxies PREFIX/NAME/REST to REST on a replica of NAME.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if !strings.HasPrefix(path, rt.prefix) {
		writeError(w, http.StatusNotFound, "not a deployment path: want "+rt.prefix+"NAME/...")
		return
	}
	name, _, _ := strings.Cut(path[len(rt.prefix):], "/")
	p := rt.pool(name)
	if p == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no deployment %q", name))
		return
	}
	path, raw := upstreamPath(r, len(rt.prefix)+len(name))
	p.serve(w, r, path, raw)
}

// upstreamPath is the path after PREFIX/NAME ("/" when empty), with its
// escaped form when the client's differs (the prefix and the name, a DNS
// label, never need escaping, so both forms share their first n bytes).
func upstreamPath(r *http.Request, n int) (path, raw string) {
	path = r.URL.Path[n:]
	if rp := r.URL.RawPath; len(rp) > n && rp[:n] == r.URL.Path[:n] && rp[n] == '/' {
		raw = rp[n:] // not when the name ends in an escaped "/" ("m%2F")
	}
	if path == "" {
		path, raw = "/", ""
	}
	return path, raw
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(errorBody{Error: msg})
}
