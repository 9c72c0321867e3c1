// Package agent is the node daemon of gpucloud. It finds the node's GPUs
// (NVML, or emulated devices) and InfiniBand HCAs, registers the node with
// the control plane and keeps its lease alive, runs the health checks that
// cordon the node, starts and tears down the ranks the control plane
// assigns (internal/agent/launch), reports their starts and exits, and
// relays their logs.
//
// The control plane is level-triggered: every message of the assignment
// stream is the node's whole desired state, which the agent applies with
// launch.Launcher.Sync.
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"gpucloud/internal/agent/gpu"
	"gpucloud/internal/agent/health"
	"gpucloud/internal/agent/ib"
	"gpucloud/internal/agent/launch"
	"gpucloud/internal/api"
	"gpucloud/internal/client"
)

// Config sets up an agent.
type Config struct {
	// Servers are the control plane's URLs; Token is an agent (or admin)
	// token.
	Servers []string
	Token   string
	// NodeName defaults to the hostname. Address is how ranks on other
	// nodes reach this one (MASTER_ADDR when it hosts rank 0); by default
	// the local address of the route to the first server.
	NodeName string
	Address  string
	// DataDir holds the launcher's state, the ranks' logs and working
	// directories. CheckpointRoot holds GPUCLOUD_CHECKPOINT_DIR of each job
	// (default DataDir/checkpoints; a shared filesystem lets restarts move).
	DataDir        string
	CheckpointRoot string

	// FakeGPUs > 0 declares emulated GPUs of GPUModel instead of NVML.
	FakeGPUs int
	GPUModel string
	// GPUs, when set, is used instead of NVML or emulation (tests).
	GPUs gpu.Source

	// IBRoot is where the HCAs are listed (default /sys/class/infiniband).
	IBRoot string
	// HealthScript is the operator's check (empty: none); HealthInterval
	// paces all checks (default 1m), HealthTimeout bounds the script.
	HealthScript   string
	HealthInterval time.Duration
	HealthTimeout  time.Duration

	// Place is where the node sits in the fabric, when the fabric file the
	// server holds does not say (--leaf, --block).
	Place api.FabricPlace
	// NCCLTopoFile is the node's NCCL topology XML (NCCL_TOPO_FILE).
	NCCLTopoFile string
	// RankEnv is added to every rank's environment (GLOO_SOCKET_IFNAME,
	// NCCL_SOCKET_IFNAME ...); a job's own env overrides it.
	RankEnv map[string]string

	GracePeriod           time.Duration
	LogMaxMB, LogMaxFiles int
	// Shim runs a rank's supervisor: [/usr/bin/gpucloud agent shim].
	Shim []string
	// PrestartShims is the number of idle shims kept ready once the node
	// has run a gang, to keep the shim's start off the launch path
	// (0: one per GPU, at most 16; negative: none).
	PrestartShims int

	// FenceAfter: without a heartbeat accepted for this long, the agent
	// tears its gangs down, since the control plane has requeued them
	// elsewhere (default: the lease TTL; negative: never).
	FenceAfter time.Duration

	Version string
	// Labels go to the node's metadata.labels at registration.
	Labels map[string]string
	Log    *slog.Logger
}

// Agent is one node's daemon.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	c       *client.Client
	gpus    gpu.Source
	inv     gpu.Inventory
	hcas    []ib.HCA
	checker *health.Checker
	script  *health.Script
	l       *launch.Launcher

	mu        sync.Mutex
	pending   []api.RankEvent // reports not yet accepted by the server
	wake      chan struct{}
	logFlush  chan logFlush // asks the relay to ship ended ranks' logs now
	unhealthy []int
	reason    string // the health problems now ("" when healthy)
	lease     time.Duration
	interval  time.Duration
	lastBeat  time.Time
	fenced    bool
	reg       chan struct{} // signalled to register again
}

// New discovers the node and opens the launcher (adopting the ranks a
// previous agent left). It fails with an error matching gpu.ErrNoGPU when
// the node has no GPU and no --fake-gpus.
func New(cfg Config) (*Agent, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("agent: --server is required")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("agent: --data-dir is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("agent: node name: %w", err)
		}
		cfg.NodeName = h
	}
	if msg := api.ValidNodeName(cfg.NodeName); msg != "" {
		return nil, fmt.Errorf("agent: --node-name %q: %s", cfg.NodeName, msg)
	}
	if cfg.IBRoot == "" {
		cfg.IBRoot = ib.DefaultRoot
	}
	if cfg.HealthInterval <= 0 {
		cfg.HealthInterval = time.Minute
	}
	a := &Agent{cfg: cfg, log: cfg.Log, wake: make(chan struct{}, 1), reg: make(chan struct{}, 1), logFlush: make(chan logFlush),
		lease: 30 * time.Second, interval: 10 * time.Second}
	var err error
	switch {
	case cfg.GPUs != nil:
		a.gpus = cfg.GPUs
	case cfg.FakeGPUs > 0:
		a.gpus, err = gpu.NewEmulated(cfg.FakeGPUs, cfg.GPUModel, cfg.NodeName)
	default:
		if cfg.GPUModel != "" {
			return nil, errors.New("agent: --gpu-model goes with --fake-gpus")
		}
		a.gpus, err = gpu.OpenDefault(cfg.Log)
	}
	if err != nil {
		return nil, err
	}
	if cfg.HealthScript != "" {
		a.script = &health.Script{Path: cfg.HealthScript, Timeout: cfg.HealthTimeout}
		if err := a.script.Validate(); err != nil {
			a.gpus.Close()
			return nil, err
		}
	}
	if a.checker, err = health.NewChecker(a.gpus, cfg.IBRoot, a.script); err != nil {
		a.gpus.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.inv, a.hcas = a.checker.Baseline()
	if len(a.inv.Devices) == 0 {
		a.gpus.Close()
		return nil, fmt.Errorf("agent: %w: the GPU source lists no device", gpu.ErrNoGPU)
	}
	nodeEnv := map[string]string{}
	if cfg.NCCLTopoFile != "" {
		if _, err := os.Stat(cfg.NCCLTopoFile); err != nil {
			a.gpus.Close()
			return nil, fmt.Errorf("agent: --nccl-topo-file: %w", err)
		}
		nodeEnv["NCCL_TOPO_FILE"] = cfg.NCCLTopoFile
	}
	if v := ib.NCCLIBHCA(ib.Rails(a.hcas)); v != "" {
		nodeEnv["NCCL_IB_HCA"] = v
	}
	for k, v := range cfg.RankEnv {
		nodeEnv[k] = v
	}
	a.l, err = launch.New(launch.Config{
		DataDir: cfg.DataDir, CheckpointRoot: cfg.CheckpointRoot, NodeName: cfg.NodeName,
		Shim: cfg.Shim, GracePeriod: cfg.GracePeriod, LogMaxMB: cfg.LogMaxMB, LogMaxFiles: cfg.LogMaxFiles,
		NodeEnv: nodeEnv, OnEvent: a.enqueue, Log: cfg.Log,
		Prestart: prestart(cfg.PrestartShims, len(a.inv.Devices)),
	})
	if err != nil {
		a.gpus.Close()
		return nil, err
	}
	a.c = client.New(cfg.Servers, cfg.Token, client.Options{Timeout: 10 * time.Second})
	a.c.Retry = 5 * time.Second
	return a, nil
}

// Inventory is what the agent found.
func (a *Agent) Inventory() (gpu.Inventory, []ib.HCA) { return a.inv, a.hcas }

// Launcher is the agent's launcher.
func (a *Agent) Launcher() *launch.Launcher { return a.l }

// Run registers the node and serves until ctx ends. The ranks keep running
// when it returns: the next agent on the same data directory adopts them.
func (a *Agent) Run(ctx context.Context) error {
	defer a.gpus.Close()
	defer a.l.Close()
	if a.cfg.Address == "" {
		addr, err := routeAddress(a.cfg.Servers[0])
		if err != nil {
			return fmt.Errorf("agent: --address not given and %w", err)
		}
		a.cfg.Address = addr
	}
	if err := a.register(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, f := range []func(context.Context){a.uplink, a.watch, a.healthLoop, a.relayLoop} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx)
		}()
	}
	wg.Wait()
	return nil
}

// register registers the node, retrying until it succeeds or ctx ends.
func (a *Agent) register(ctx context.Context) error {
	backoff := 200 * time.Millisecond
	for {
		r, err := a.c.Register(ctx, a.registration())
		if err == nil {
			a.mu.Lock()
			if r.LeaseTTLSeconds > 0 {
				a.lease = time.Duration(r.LeaseTTLSeconds) * time.Second
			}
			if r.HeartbeatIntervalSeconds > 0 {
				a.interval = time.Duration(r.HeartbeatIntervalSeconds) * time.Second
			}
			a.lastBeat = time.Now()
			a.mu.Unlock()
			for _, w := range r.Warnings {
				a.log.Warn("registration", "warning", w)
			}
			a.log.Info("registered", "node", a.cfg.NodeName, "address", a.cfg.Address, "gpus", len(a.inv.Devices),
				"source", a.inv.Source, "leaf", r.Leaf, "inFabric", r.InFabric, "leaseTTL", a.lease)
			return nil
		}
		var ae *client.Error
		if errors.As(err, &ae) && ae.Code >= 400 && ae.Code < 500 && ae.Code != 408 && ae.Code != 429 {
			return fmt.Errorf("agent: registration refused: %w", err)
		}
		a.log.Warn("registration failed; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (a *Agent) registration() *api.NodeRegistration {
	host, _ := os.Hostname()
	inv := api.NodeInventory{Hostname: host, CPUs: runtime.NumCPU(), MemoryMiB: memoryMiB(), GPUs: []api.GPU{}}
	for _, d := range a.inv.Devices {
		inv.GPUs = append(inv.GPUs, api.GPU{Index: d.Index, UUID: d.UUID, Model: d.Model, MemoryMiB: int(d.MemoryMiB), Emulated: d.Emulated})
	}
	for _, h := range a.hcas {
		for _, p := range h.Ports {
			inv.HCAs = append(inv.HCAs, api.HCA{Name: h.Name, Port: p.Num, RateGbps: p.RateGbps, GUID: h.NodeGUID, State: p.State})
		}
	}
	return &api.NodeRegistration{Name: a.cfg.NodeName, Address: a.cfg.Address, Inventory: inv, Place: a.cfg.Place, AgentVersion: a.cfg.Version, Labels: a.cfg.Labels}
}

// watch applies the assignment stream, reconnecting when it breaks.
func (a *Agent) watch(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := a.c.WatchAssignments(ctx, a.cfg.NodeName, func(set api.AssignmentSet) error {
			backoff = 100 * time.Millisecond
			specs := make([]launch.Spec, 0, len(set.Assignments))
			for _, as := range set.Assignments {
				specs = append(specs, launch.Spec{Assignment: as, Hosts: a.hosts(as)})
			}
			if err := a.l.Sync(specs); err != nil {
				a.log.Error("assignments", "err", err)
			}
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		if client.IsCode(err, 404) { // the server forgot the node
			a.signalRegister()
		}
		a.log.Warn("assignment stream ended; reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// hosts are the hostfile's lines for an assignment: the gang's nodes as
// the server lists them, each with a slot per GPU it has in the job. From
// a server that does not list them, only a one-node gang gets a hostfile:
// this node.
func (a *Agent) hosts(as api.Assignment) []launch.Host {
	if len(as.Hosts) > 0 {
		out := make([]launch.Host, len(as.Hosts))
		for i, h := range as.Hosts {
			out[i] = launch.Host{Name: cmp.Or(h.Address, h.Node), Slots: h.Slots}
		}
		return out
	}
	if as.Nodes != 1 {
		return nil
	}
	slots := 0
	for _, p := range as.Processes {
		slots += len(p.GPUs)
	}
	if slots == 0 {
		return nil
	}
	return []launch.Host{{Name: a.cfg.Address, Slots: slots}}
}

func (a *Agent) signalRegister() {
	select {
	case a.reg <- struct{}{}:
	default:
	}
}

// enqueue queues a rank event for the server (launcher callback).
func (a *Agent) enqueue(e api.RankEvent) {
	a.mu.Lock()
	a.pending = append(a.pending, e)
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// uplink sends reports as they come and heartbeats on the lease's pace.
// Reports go first: a heartbeat that no longer lists a rank whose exit
// the server has not heard of would make the server declare it lost.
func (a *Agent) uplink(ctx context.Context) {
	a.mu.Lock()
	interval := a.interval
	a.mu.Unlock()
	beat := time.NewTimer(0)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.wake:
			a.flushReports(ctx)
		case <-a.reg:
			if err := a.register(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("registering again", "err", err)
			}
		case <-beat.C:
			a.flushReports(ctx)
			a.heartbeat(ctx)
			a.mu.Lock()
			interval = a.interval
			a.mu.Unlock()
			beat.Reset(interval)
		}
	}
}

func (a *Agent) flushReports(ctx context.Context) {
	a.mu.Lock()
	batch := a.pending
	a.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	a.shipLogsOf(ctx, batch)
	err := a.c.Report(ctx, a.cfg.NodeName, batch...)
	var ae *client.Error
	if err != nil && !(errors.As(err, &ae) && ae.Code >= 400 && ae.Code < 500) {
		a.log.Warn("reports not delivered; will retry", "err", err, "events", len(batch))
		return // kept for the next try
	}
	if err != nil {
		a.log.Error("reports refused", "err", err, "events", len(batch))
	}
	a.mu.Lock()
	a.pending = a.pending[len(batch):]
	a.mu.Unlock()
}

func (a *Agent) heartbeat(ctx context.Context) {
	hb := &api.Heartbeat{Running: a.l.Running()}
	a.mu.Lock()
	hb.Unhealthy = append([]int(nil), a.unhealthy...)
	// Jobs whose exits the server has not accepted yet count as running.
	for _, e := range a.pending {
		if e.Event == api.RankExited && !hasJob(hb.Running, e.Job, e.Generation) {
			hb.Running = append(hb.Running, api.RunningJob{Job: e.Job, Generation: e.Generation})
		}
	}
	a.mu.Unlock()
	err := a.c.Heartbeat(ctx, a.cfg.NodeName, hb)
	switch {
	case err == nil:
		a.mu.Lock()
		a.lastBeat = time.Now()
		a.fenced = false
		a.mu.Unlock()
		return
	case client.IsCode(err, 410):
		a.log.Warn("lease gone; registering again")
		if err := a.register(ctx); err != nil {
			a.log.Error("registering again", "err", err)
		}
		return
	}
	a.log.Warn("heartbeat failed", "err", err)
	a.mu.Lock()
	fence := a.cfg.FenceAfter
	if fence == 0 {
		fence = a.lease
	}
	since := time.Since(a.lastBeat)
	doFence := fence > 0 && since > fence && !a.fenced
	if doFence {
		a.fenced = true
	}
	a.mu.Unlock()
	if doFence {
		// The server has declared the node Down and requeued its gangs:
		// ranks left running here would duplicate them.
		reason := fmt.Sprintf("the node lost its lease (no heartbeat accepted for %v)", since.Round(time.Second))
		a.log.Error("fencing: tearing down every gang", "reason", reason)
		go a.l.StopAll(reason)
	}
}

// prestart is the launcher's pool size: by default one idle shim per GPU,
// so a per-GPU gang starts without waiting for shims to start.
func prestart(n, gpus int) int {
	switch {
	case n < 0:
		return 0
	case n == 0:
		return min(gpus, 16)
	}
	return n
}

func hasJob(rs []api.RunningJob, job string, gen int) bool {
	for _, r := range rs {
		if r.Job == job && r.Generation == gen {
			return true
		}
	}
	return false
}

// routeAddress is the local address of the route to the server.
func routeAddress(server string) (string, error) {
	u, err := url.Parse(server)
	if err != nil || u.Host == "" {
		u, err = url.Parse("http://" + server)
		if err != nil {
			return "", fmt.Errorf("cannot read the server URL %q", server)
		}
	}
	host := u.Host
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(host, "80")
	}
	conn, err := net.Dial("udp", host)
	if err != nil {
		return "", fmt.Errorf("cannot find a route to %s: %w", host, err)
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).IP.String(), nil
}

// memoryMiB reads MemTotal from /proc/meminfo.
func memoryMiB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.Atoi(f[1])
			return kb / 1024
		}
	}
	return 0
}

// DefaultDataDir is where the agent keeps its state when not told.
var DefaultDataDir = filepath.Join("/var/lib", "gpucloud-agent")
