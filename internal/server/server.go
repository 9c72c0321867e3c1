// Package server is the control plane of gpucloud: the HTTP API on etcd,
// tenants and tokens, the job lifecycle, the scheduling loop (through
// internal/sched) and the reconcilers, and metrics.
//
// Every replica serves the API from its own copy of the state (kept by a
// watch on etcd) and writes to etcd with compare-and-swap; one replica,
// elected through etcd, runs the scheduler and the reconcilers. A replica
// holds nothing that is not in etcd, so kill -9 at any moment loses
// nothing that was acknowledged.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"gpucloud/internal/store"
	"gpucloud/internal/topology"
)

// Config configures a server replica.
type Config struct {
	// Listen is the API address (":8080"; "127.0.0.1:0" picks a port).
	Listen string
	// DataDir holds the embedded etcd and admin.token.
	DataDir string
	// EtcdEndpoints, when set, use an external etcd cluster instead of the
	// embedded member.
	EtcdEndpoints []string
	// EtcdClientURL and EtcdPeerURL are the embedded member's URLs
	// (defaults 127.0.0.1:2379 and :2380).
	EtcdClientURL, EtcdPeerURL string
	// NoFsync runs the embedded etcd without fsync (tests only).
	NoFsync bool
	// Store, when set, is used as is (gpucloud up, tests).
	Store *store.Store

	// Fabric is the datacenter the scheduler places on; nodes that agents
	// register and the fabric does not list are added under leaf "local".
	Fabric *topology.Fabric

	TLSCert, TLSKey string

	// Dashboard, when set, serves every path the API does not own
	// (/v1/..., /healthz, /readyz, /metrics): the web UI on the API's
	// origin, behind the same TLS.
	Dashboard http.Handler

	// NodeLeaseTTL: a node whose agent sends no heartbeat for this long is
	// Down (default 30s); HeartbeatInterval is what agents are told
	// (default 10s).
	NodeLeaseTTL      time.Duration
	HeartbeatInterval time.Duration
	// LeaderTTL bounds failover: a dead leader's session expires after it
	// (seconds, default 5).
	LeaderTTL int
	// CycleInterval paces the scheduling loop (default 100ms).
	CycleInterval time.Duration
	// MaxBodyBytes caps request bodies (default 1 MiB).
	MaxBodyBytes int64
	// TxnOps caps operations per etcd transaction (default 128, etcd's
	// default limit).
	TxnOps int
	// ID names this replica in the leader election (default host:listen).
	ID string
	// AdvertiseURL is where the other replicas reach this one's API, to
	// forward deployment traffic to the leader (default: the scheme and
	// listen address, with the host name when it listens on every
	// interface).
	AdvertiseURL string
	// Pprof serves /debug/pprof/ (admin token required).
	Pprof bool
	// JobRetention deletes jobs this long after they finished, with their
	// reports and logs (0: keep them until deleted by hand).
	JobRetention time.Duration
	// GCInterval paces the leader's garbage collection: events, expired
	// jobs, etcd compaction (default 30s).
	GCInterval time.Duration

	Logger *slog.Logger
}

func (c *Config) defaults() {
	if c.Listen == "" {
		c.Listen = ":8080"
	}
	if c.NodeLeaseTTL == 0 {
		c.NodeLeaseTTL = 30 * time.Second
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 10 * time.Second
	}
	if c.LeaderTTL == 0 {
		c.LeaderTTL = 5
	}
	if c.CycleInterval == 0 {
		c.CycleInterval = 100 * time.Millisecond
	}
	if c.GCInterval == 0 {
		c.GCInterval = 30 * time.Second
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.TxnOps == 0 {
		c.TxnOps = 128
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Server is one replica of the control plane.
type Server struct {
	cfg     Config
	log     *slog.Logger
	st      *state
	store   *store.Store
	embed   *store.Embedded
	metrics *metrics
	handler http.Handler
	renew   *renewer

	ln       net.Listener
	ready    chan struct{}
	isLeader atomic.Bool
	// lastWrite is the revision of this replica's latest write: lists wait
	// for the state to reach it (read your own writes).
	lastWrite atomic.Int64
	// fabricDoc caches GET /v1/fabric.
	fabricDoc fabricCache
	// deploy runs inference deployments (deployments.go).
	deploy *deployments

	mu      sync.Mutex
	started bool
}

// New makes a server; Run starts it.
func New(cfg Config) (*Server, error) {
	cfg.defaults()
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("server: --tls-cert and --tls-key go together")
	}
	if cfg.Store == nil && len(cfg.EtcdEndpoints) == 0 && cfg.DataDir == "" {
		return nil, errors.New("server: a data directory is needed for the embedded etcd")
	}
	s := &Server{cfg: cfg, log: cfg.Logger, st: newState(cfg.Logger), ready: make(chan struct{})}
	s.metrics = newMetrics(s)
	s.deploy = newDeployments(s)
	s.renew = newRenewer(s)
	s.handler = s.routes()
	return s, nil
}

// Handler is the HTTP API (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.handler }

// Ready is closed once the server serves requests.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the address the API listens on, once Ready.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// IsLeader reports whether this replica runs the scheduler now.
func (s *Server) IsLeader() bool { return s.isLeader.Load() }

// Store is the etcd store the server uses, once Ready.
func (s *Server) Store() *store.Store { return s.store }

// Run starts etcd (when embedded), the state reflector, the API and the
// leader campaign, and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("server: Run called twice")
	}
	s.started = true
	s.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := s.openStore(ctx); err != nil {
		return err
	}
	defer func() {
		if s.cfg.Store == nil {
			s.store.Close()
		}
		if s.embed != nil {
			s.embed.Close()
		}
	}()
	if err := s.bootstrap(ctx); err != nil {
		return err
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.store.Reflect(ctx, store.Prefix, s.st)
	}()
	rev, err := s.store.Revision(ctx)
	if err != nil {
		return err
	}
	if err := s.syncTo(ctx, rev); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("server: listen %s: %w", s.cfg.Listen, err)
	}
	s.ln = ln
	if s.cfg.ID == "" {
		host, _ := os.Hostname()
		s.cfg.ID = host + "/" + ln.Addr().String()
	}
	if s.cfg.AdvertiseURL == "" {
		s.cfg.AdvertiseURL = advertiseURL(ln.Addr(), s.cfg.TLSCert != "")
	}
	// Requests live in the server's context, so streams (watches,
	// assignments, logs) end when the server stops.
	hs := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext: func(net.Listener) context.Context { return ctx }}
	if s.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			ln.Close()
			return fmt.Errorf("server: TLS: %w", err)
		}
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	errc := make(chan error, 1)
	useTLS := hs.TLSConfig != nil // read before Serve starts, which owns hs from then on
	go func() {
		var err error
		if useTLS {
			err = hs.ServeTLS(ln, "", "")
		} else {
			err = hs.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.campaign(ctx)
	}()
	go func() {
		defer wg.Done()
		s.renew.run(ctx)
	}()
	s.log.Info("server: serving", "addr", ln.Addr().String(), "tls", useTLS, "replica", s.cfg.ID)
	close(s.ready)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, scancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer scancel()
	hs.Shutdown(sctx)
	return err
}

func (s *Server) openStore(ctx context.Context) error {
	if s.cfg.Store != nil {
		s.store = s.cfg.Store
		return nil
	}
	endpoints := s.cfg.EtcdEndpoints
	if len(endpoints) == 0 {
		e, err := store.StartMember(ctx, store.MemberConfig{
			Dir: s.cfg.DataDir, ClientURL: s.cfg.EtcdClientURL, PeerURL: s.cfg.EtcdPeerURL, NoFsync: s.cfg.NoFsync,
			MaxTxnOps: uint(max(s.cfg.TxnOps, 128)),
		})
		if err != nil {
			return err
		}
		s.embed = e
		endpoints = e.Endpoints
	}
	st, err := store.Open(ctx, endpoints, store.Options{Logger: s.log})
	if err != nil {
		if s.embed != nil {
			s.embed.Close()
		}
		return err
	}
	s.store = st
	return nil
}

// bootstrap makes the first admin token, the default tenant and the
// default queue, once per cluster: the replica whose transaction wins
// writes admin.token to its data directory. The token is written to a
// temporary file before the transaction and renamed after it, so a crash
// in between cannot lose the only admin token.
func (s *Server) bootstrap(ctx context.Context) error {
	path := filepath.Join(s.cfg.DataDir, "admin.token")
	tmp := path + ".new"
	if s.cfg.DataDir != "" {
		if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
			return err
		}
		if b, err := os.ReadFile(tmp); err == nil {
			// A crash between the transaction and the rename: keep the
			// token if it is the one etcd knows.
			if kv, err := s.store.Get(ctx, store.TokensKey+hashToken(string(b[:len(b)-1]))); err == nil && len(kv.Value) > 0 {
				return os.Rename(tmp, path)
			}
			os.Remove(tmp)
		}
	}
	tok, rec := newToken("admin", "admin", "")
	if s.cfg.DataDir != "" {
		if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
			return fmt.Errorf("server: write admin token: %w", err)
		}
	}
	_, err := s.store.Create(ctx, store.BootstrapKey, []byte(rec.ID),
		opPut(store.TokensKey+hashToken(tok), mustJSON(rec)),
		opPut(store.TenantsKey+"default", mustJSON(defaultTenant())),
		opPut(store.QueuesKey+"default", mustJSON(defaultQueue())))
	if errors.Is(err, store.ErrExists) {
		os.Remove(tmp)
		return nil
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("server: bootstrap: %w", err)
	}
	if s.cfg.DataDir == "" {
		s.log.Warn("server: no data directory: the admin token is only logged", "token", tok)
		return nil
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("server: write admin token: %w", err)
	}
	s.log.Info("server: first start: admin token written", "path", path)
	return nil
}

// advertiseURL is the URL of the API listening at addr: the host name
// stands for an address of every interface.
func advertiseURL(addr net.Addr, tls bool) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}
