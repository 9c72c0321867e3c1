package main

// gpucloud up: the whole cloud on one machine. An embedded etcd, the
// control plane, one agent for this machine (its GPUs through NVML, or
// emulated ones), optionally simulated nodes of a fabric that run their
// ranks here too, and the dashboard.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"gpucloud/internal/agent"
	"gpucloud/internal/agent/gpu"
	"gpucloud/internal/api"
	"gpucloud/internal/client"
	"gpucloud/internal/server"
	"gpucloud/internal/topology"
)

func init() { extraCommands = append(extraCommands, newUpCmd) }

// upOptions are the flags of up (and of demo, which starts up when no
// server answers).
type upOptions struct {
	dataDir, listen  string
	fakeGPUs         int
	fakeSet          bool // --fake-gpus given: emulate even if NVML finds GPUs
	gpuModel         string
	nodeName         string
	fabricPath       string
	fabricIn         fabricInput
	preset           string
	presetGPUs       int
	grace            time.Duration
	logLevel         string
	noConfig         bool
	maxSimNodes      int
	heartbeat, lease time.Duration
}

func addUpFlags(cmd *cobra.Command, o *upOptions) {
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", "~/.gpucloud", "state of the cloud: etcd, admin.token, the agents' rank logs")
	f.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address of the API and the dashboard")
	f.IntVar(&o.fakeGPUs, "fake-gpus", 8, "emulated GPUs of this machine when NVML finds none (given explicitly: emulate even if it does)")
	f.StringVar(&o.gpuModel, "gpu-model", "H100-80GB", "model of the emulated GPUs")
	f.StringVar(&o.nodeName, "node-name", "", "name of this machine's node (default: the hostname)")
	f.StringVar(&o.fabricPath, "fabric", "", "add the nodes of this fabric file as simulated nodes (any format `gpucloud topology validate` reads)")
	o.fabricIn.flags(cmd, "format")
	f.StringVar(&o.preset, "preset", "", "add a generated fleet as simulated nodes: "+strings.Join(topology.PresetNames(), "|"))
	f.IntVar(&o.presetGPUs, "gpus", 0, "GPUs of the --preset fleet")
	f.DurationVar(&o.grace, "grace-period", 10*time.Second, "time between SIGTERM and SIGKILL when ranks are stopped")
	f.StringVar(&o.logLevel, "log-level", "info", "level of <data-dir>/up.log: debug|info|warn|error")
	f.BoolVar(&o.noConfig, "no-config", false, "do not write the CLI config (~/.gpucloud/config or $"+envConfig+")")
	f.IntVar(&o.maxSimNodes, "max-simulated-nodes", 128, "refuse fabrics with more nodes than this (each runs an agent in this process)")
	f.DurationVar(&o.heartbeat, "heartbeat-interval", 5*time.Second, "agents' heartbeat interval")
	f.DurationVar(&o.lease, "node-lease-ttl", 15*time.Second, "a node without heartbeat for this long is Down")
	f.MarkHidden("max-simulated-nodes")
	f.MarkHidden("heartbeat-interval")
	f.MarkHidden("node-lease-ttl")
}

func newUpCmd() *cobra.Command {
	var o upOptions
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the whole cloud on this machine: etcd, control plane, an agent, the dashboard",
		Long: `Start gpucloud on this machine, in one process: an embedded etcd, the
control plane (API, scheduler, reconcilers), an agent for this machine and the
dashboard. The agent uses the machine's NVIDIA GPUs through NVML; on a machine
without any it emulates --fake-gpus GPUs (8 by default), which run real
processes just the same.

--fabric FILE or --preset NAME --gpus N add simulated nodes beside this one:
the scheduler places gangs on them by their leaf switches and NVLink domains,
and their ranks run here as local processes (their GPUs are emulated).

The first start writes the admin token to <data-dir>/admin.token and the CLI
config (~/.gpucloud/config) so that every other command works at once.
Ctrl-C stops cleanly: running gangs go back to the queue, their ranks are
stopped, etcd is closed. The next ` + "`gpucloud up`" + ` on the same --data-dir
resumes with every job, queue and token, and the requeued gangs start again
from their checkpoints. A second Ctrl-C stops at once; the ranks then keep
running and the next start adopts them.`,
		Example: `  gpucloud up
  gpucloud up --fake-gpus 4
  gpucloud up --preset ndv5 --gpus 256          # plus 32 simulated ND H100 v5 nodes on 1 leaf
  gpucloud up --fabric topology.conf --data-dir /tmp/gc --listen 127.0.0.1:9090`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.fakeSet = cmd.Flags().Changed("fake-gpus")
			ctx, stopping := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stopping()
			u, err := startUp(ctx, &o, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			u.printBanner(cmd.OutOrStdout(), true)
			return u.serveUntil(ctx, cmd.ErrOrStderr())
		},
	}
	addUpFlags(cmd, &o)
	return cmd
}

// upState is <data-dir>/up.json: what a restart must find again.
type upState struct {
	EtcdClientPort int `json:"etcdClientPort"`
	EtcdPeerPort   int `json:"etcdPeerPort"`
	// Drained lists the nodes the last clean stop drained; the next start
	// uncordons them (and leaves alone those an administrator cordoned).
	Drained []string `json:"drained,omitempty"`
}

// upInstance is a running `up`.
type upInstance struct {
	o        *upOptions
	dir      string
	url      string // what clients use
	admin    string // admin token
	admCli   *client.Client
	srv      *server.Server
	srvDone  chan error
	srvStop  context.CancelFunc
	agents   []*upAgent
	agStop   context.CancelFunc
	agWG     sync.WaitGroup
	state    upState
	lock     *os.File
	log      *slog.Logger
	logFile  *os.File
	termLvl  *slog.LevelVar
	realNode string
	realGPUs string // "8 emulated H100-80GB GPUs", "8 x NVIDIA H100 80GB HBM3 (NVML)"
	fabric   *topology.Fabric
	config   string // the CLI config written ("" if none)
}

type upAgent struct {
	name      string
	simulated bool
	a         *agent.Agent
}

// expandHome turns a leading ~ into the home directory.
func expandHome(p string) (string, error) {
	if p == "~" || strings.HasPrefix(p, "~/") {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("--data-dir %s: %w", p, err)
		}
		p = filepath.Join(home, strings.TrimPrefix(p, "~"))
	}
	return filepath.Abs(p)
}

// clientURL is the URL clients on this machine use for a listen address.
func clientURL(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("--listen %q: want HOST:PORT (%v)", listen, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// startUp starts everything and returns once the nodes are Ready. progress
// gets a line per slow step.
func startUp(ctx context.Context, o *upOptions, progress io.Writer) (_ *upInstance, err error) {
	u := &upInstance{o: o}
	if u.dir, err = expandHome(o.dataDir); err != nil {
		return nil, err
	}
	if u.url, err = clientURL(o.listen); err != nil {
		return nil, err
	}
	if err := u.loadFabric(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(u.dir, 0o700); err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	if err := u.takeLock(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			u.abort()
		}
	}()
	if err := u.openLog(progress); err != nil {
		return nil, err
	}
	// A taken port fails here, before etcd starts, with a clear message.
	if l, lerr := net.Listen("tcp", o.listen); lerr != nil {
		return nil, fmt.Errorf("cannot listen on %s (%v): is another `gpucloud up` running? Choose another address with --listen", o.listen, errors.Unwrap(lerr))
	} else {
		l.Close()
	}
	if err := u.loadState(); err != nil {
		return nil, err
	}
	if err := u.startServer(ctx); err != nil {
		return nil, err
	}
	if err := u.readAdminToken(); err != nil {
		return nil, err
	}
	agentToken, err := u.agentToken(ctx)
	if err != nil {
		return nil, err
	}
	if err := u.startAgents(agentToken); err != nil {
		return nil, err
	}
	if err := u.waitNodes(ctx, progress); err != nil {
		return nil, err
	}
	if err := u.undrain(ctx); err != nil {
		return nil, err
	}
	if !o.noConfig {
		if err := u.writeCLIConfig(); err != nil {
			return nil, err
		}
	}
	u.termLvl.Set(slog.LevelWarn)
	return u, nil
}

func (u *upInstance) loadFabric() error {
	o := u.o
	switch {
	case o.fabricPath != "" && o.preset != "":
		return errors.New("--fabric and --preset exclude each other")
	case o.fabricPath != "":
		f, _, err := o.fabricIn.load(o.fabricPath)
		if err != nil {
			return err
		}
		u.fabric = f
	case o.preset != "":
		if o.presetGPUs <= 0 {
			return errors.New("--preset needs --gpus (the size of the simulated fleet)")
		}
		f, err := topology.Generate(o.preset, o.presetGPUs)
		if err != nil {
			return err
		}
		u.fabric = f
	case o.presetGPUs > 0:
		return errors.New("--gpus goes with --preset")
	}
	if u.fabric != nil && len(u.fabric.Nodes) > o.maxSimNodes {
		return fmt.Errorf("the fabric has %d nodes: up runs an agent per simulated node and stops at %d; "+
			"for a larger fleet use `gpucloud sim` (the same scheduler, no processes)", len(u.fabric.Nodes), o.maxSimNodes)
	}
	return nil
}

// takeLock keeps two `up` off one data directory.
func (u *upInstance) takeLock() error {
	path := filepath.Join(u.dir, "up.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		pid := strings.TrimSpace(string(b))
		if pid == "" {
			pid = "?"
		}
		return fmt.Errorf("another `gpucloud up` (pid %s) is running on %s: stop it, or use another --data-dir", pid, u.dir)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	u.lock = f
	return nil
}

// openLog sends the components' logs to <data-dir>/up.log, and warnings
// to the terminal as well.
func (u *upInstance) openLog(term io.Writer) error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(u.o.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(u.dir, "up.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	u.logFile = f
	u.termLvl = new(slog.LevelVar)
	u.termLvl.Set(slog.LevelError) // warnings once started: the start's retries are not news
	u.log = slog.New(slog.NewMultiHandler(
		slog.NewTextHandler(f, &slog.HandlerOptions{Level: lvl}),
		slog.NewTextHandler(term, &slog.HandlerOptions{Level: u.termLvl}),
	))
	u.log.Info("gpucloud up: starting", "dataDir", u.dir, "listen", u.o.listen, "pid", os.Getpid())
	return nil
}

func (u *upInstance) statePath() string { return filepath.Join(u.dir, "up.json") }

// loadState reads up.json and picks the embedded etcd's ports: the same
// as last time when free (the member keeps its URLs), else new ones.
func (u *upInstance) loadState() error {
	b, err := os.ReadFile(u.statePath())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err == nil {
		if err := json.Unmarshal(b, &u.state); err != nil {
			return fmt.Errorf("%s: %w (delete it to start with new etcd ports)", u.statePath(), err)
		}
	}
	for _, p := range []*int{&u.state.EtcdClientPort, &u.state.EtcdPeerPort} {
		if *p == 0 || !portFree(*p) {
			if *p, err = freeLoopbackPort(); err != nil {
				return err
			}
		}
	}
	return u.saveState()
}

func (u *upInstance) saveState() error {
	b, _ := json.MarshalIndent(u.state, "", "  ")
	tmp := u.statePath() + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, u.statePath())
}

func (u *upInstance) startServer(ctx context.Context) error {
	host, _ := os.Hostname()
	cfg := server.Config{
		Listen:            u.o.listen,
		DataDir:           u.dir,
		EtcdClientURL:     fmt.Sprintf("http://127.0.0.1:%d", u.state.EtcdClientPort),
		EtcdPeerURL:       fmt.Sprintf("http://127.0.0.1:%d", u.state.EtcdPeerPort),
		Fabric:            u.fabric,
		HeartbeatInterval: u.o.heartbeat,
		NodeLeaseTTL:      u.o.lease,
		// A stable replica ID lets a restart after a crash take the
		// leadership at once (the server revokes its own stale key).
		ID:     "up/" + host,
		Logger: u.log.With("component", "server"),
	}
	if dashboardHandler != nil {
		// The dashboard beside the API on --listen, as `gpucloud server`
		// serves it.
		cfg.Dashboard = dashboardHandler()
	}
	s, err := server.New(cfg)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	u.srv, u.srvStop, u.srvDone = s, cancel, make(chan error, 1)
	go func() { u.srvDone <- s.Run(sctx) }()
	select {
	case <-s.Ready():
	case err := <-u.srvDone:
		u.srvDone <- err
		return fmt.Errorf("control plane: %w", err)
	case <-ctx.Done():
		return errors.New("interrupted while starting")
	case <-time.After(60 * time.Second):
		return fmt.Errorf("the control plane did not start within a minute (see %s)", filepath.Join(u.dir, "up.log"))
	}
	addr := s.Addr()
	if _, port, _ := net.SplitHostPort(u.o.listen); port == "0" {
		u.url, _ = clientURL(addr) // the port picked
	}
	u.log.Info("control plane up", "url", u.url)
	return nil
}

func (u *upInstance) readAdminToken() error {
	path := filepath.Join(u.dir, "admin.token")
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("the admin token is missing (%v): %s holds a cloud whose first start was elsewhere; "+
			"copy its admin.token here, or use a new --data-dir", err, u.dir)
	}
	u.admin = strings.TrimSpace(string(b))
	u.admCli = client.New([]string{u.url}, u.admin, client.Options{Timeout: 10 * time.Second})
	u.admCli.Retry = 5 * time.Second
	return nil
}

// agentToken returns the agents' token (<data-dir>/agent.token), made on
// the first start: agents never hold the admin token.
func (u *upInstance) agentToken(ctx context.Context) (string, error) {
	path := filepath.Join(u.dir, "agent.token")
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		c := client.New([]string{u.url}, tok, client.Options{Timeout: 10 * time.Second})
		c.Retry = 5 * time.Second
		if _, err := c.Whoami(ctx); err == nil {
			return tok, nil
		} else if !client.IsCode(err, 401) {
			return "", fmt.Errorf("checking the agent token: %w", err)
		}
		u.log.Warn("the stored agent token was refused; making a new one", "path", path)
	}
	tr, err := u.admCli.CreateToken(ctx, api.TokenRequest{Name: "gpucloud-up-agents", Role: api.RoleAgent})
	if err != nil {
		return "", fmt.Errorf("making the agents' token: %w", err)
	}
	if err := os.WriteFile(path, []byte(tr.Token+"\n"), 0o600); err != nil {
		return "", err
	}
	return tr.Token, nil
}

// shimCommand is how agents start a rank's supervisor: this binary.
func shimCommand() ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the gpucloud binary for the rank shim: %w", err)
	}
	return []string{exe, "agent", "shim"}, nil
}

func (u *upInstance) startAgents(token string) error {
	shim, err := shimCommand()
	if err != nil {
		return err
	}
	base := agent.Config{
		Servers: []string{u.url}, Token: token, Shim: shim, GracePeriod: u.o.grace,
		Version: upVersion,
	}
	// This machine: NVML unless emulation was asked for.
	real := base
	real.NodeName = u.o.nodeName
	real.DataDir = filepath.Join(u.dir, "agent")
	real.Log = u.log.With("component", "agent")
	if u.o.fakeSet {
		if u.o.fakeGPUs <= 0 {
			return fmt.Errorf("--fake-gpus %d: want 1 or more (leave it out to use NVML)", u.o.fakeGPUs)
		}
		real.FakeGPUs, real.GPUModel = u.o.fakeGPUs, u.o.gpuModel
	}
	a, err := agent.New(real)
	if errors.Is(err, gpu.ErrNoGPU) && !u.o.fakeSet {
		u.log.Info("no GPU through NVML; emulating", "gpus", u.o.fakeGPUs, "why", err)
		real.FakeGPUs, real.GPUModel = u.o.fakeGPUs, u.o.gpuModel
		a, err = agent.New(real)
	}
	if err != nil {
		return fmt.Errorf("agent of this machine: %w", err)
	}
	inv, _ := a.Inventory()
	u.realNode = real.NodeName
	if u.realNode == "" {
		u.realNode, _ = os.Hostname()
	}
	if len(inv.Devices) > 0 && inv.Devices[0].Emulated {
		u.realGPUs = fmt.Sprintf("%d emulated %s GPUs", len(inv.Devices), inv.Model())
	} else {
		u.realGPUs = fmt.Sprintf("%d x %s (%s)", len(inv.Devices), inv.Model(), inv.Source)
	}
	u.agents = append(u.agents, &upAgent{name: u.realNode, a: a})
	if u.fabric != nil {
		if _, clash := u.fabric.NodeByName(u.realNode); clash {
			return fmt.Errorf("the fabric has a node named %s, like this machine: name this one otherwise with --node-name", u.realNode)
		}
		noIB := filepath.Join(u.dir, "sim", ".no-infiniband") // simulated nodes have no real HCAs
		for i := range u.fabric.Nodes {
			n := &u.fabric.Nodes[i]
			cls := u.fabric.Class(topology.NodeID(i))
			c := base
			c.NodeName, c.Address = n.Name, "127.0.0.1"
			c.FakeGPUs, c.GPUModel = cls.GPUs, cls.GPUModel
			c.DataDir = filepath.Join(u.dir, "sim", n.Name)
			c.IBRoot = noIB
			c.HealthInterval = 5 * time.Minute
			c.Labels = map[string]string{api.LabelSimulated: "true"}
			c.Log = u.log.With("component", "agent", "node", n.Name)
			sa, err := agent.New(c)
			if err != nil {
				return fmt.Errorf("simulated node %s: %w", n.Name, err)
			}
			u.agents = append(u.agents, &upAgent{name: n.Name, simulated: true, a: sa})
		}
	}
	actx, cancel := context.WithCancel(context.Background())
	u.agStop = cancel
	for _, ua := range u.agents {
		u.agWG.Add(1)
		go func() {
			defer u.agWG.Done()
			if err := ua.a.Run(actx); err != nil && actx.Err() == nil {
				u.log.Error("agent stopped", "node", ua.name, "err", err)
			}
		}()
	}
	return nil
}

// waitNodes waits until every node of ours is Ready.
func (u *upInstance) waitNodes(ctx context.Context, progress io.Writer) error {
	want := map[string]bool{}
	for _, a := range u.agents {
		want[a.name] = true
	}
	deadline := time.Now().Add(60 * time.Second)
	said := false
	for {
		nodes, err := u.admCli.Nodes(ctx)
		if err == nil {
			ready := 0
			for _, n := range nodes {
				if want[n.Metadata.Name] && n.Status.Phase == api.NodeReady {
					ready++
				}
			}
			if ready == len(want) {
				return nil
			}
			if !said && len(want) > 8 {
				fmt.Fprintf(progress, "registering %d nodes...\n", len(want))
				said = true
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the nodes did not register within a minute (see %s)", filepath.Join(u.dir, "up.log"))
		}
		select {
		case <-ctx.Done():
			return errors.New("interrupted while starting")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// undrain uncordons the nodes the last clean stop drained.
func (u *upInstance) undrain(ctx context.Context) error {
	if len(u.state.Drained) == 0 {
		return nil
	}
	for _, name := range u.state.Drained {
		if _, err := u.admCli.NodeAction(ctx, name, "uncordon", ""); err != nil && !client.IsCode(err, 404) {
			return fmt.Errorf("uncordoning %s after the last stop: %w", name, err)
		}
	}
	u.log.Info("uncordoned the nodes the last stop drained", "nodes", len(u.state.Drained))
	u.state.Drained = nil
	return u.saveState()
}

// writeCLIConfig points the CLI at this cloud; an earlier config that
// said otherwise is kept as config.bak.
func (u *upInstance) writeCLIConfig() error {
	path := defaultConfigPath()
	want := &cliConfig{Server: u.url, Token: u.admin}
	if old, err := loadConfig(path); err == nil && old.Server != "" && (old.Server != want.Server || old.Token != want.Token) {
		if b, err := os.ReadFile(path); err == nil {
			os.WriteFile(path+".bak", b, 0o600)
		}
	}
	if err := writeConfig(path, want); err != nil {
		return fmt.Errorf("writing the CLI config %s: %w (--no-config skips it)", path, err)
	}
	u.config = path
	return nil
}

// printBanner tells where everything is and what to try next.
func (u *upInstance) printBanner(w io.Writer, next bool) {
	t := newTable(w)
	if dashboardHandler != nil {
		// The token rides in the fragment, which never reaches a server;
		// the page keeps it and drops it from the address bar.
		t.row("  dashboard:", u.url+"/#token="+u.admin)
	} else {
		t.row("  dashboard:", "not in this build (the web package is not linked in)")
	}
	t.row("  API:", u.url+"/v1 (OpenAPI at "+u.url+"/v1/openapi.json)")
	t.row("  admin token:", filepath.Join(u.dir, "admin.token"))
	if u.config != "" {
		t.row("  CLI config:", u.config+" (the CLI uses this cloud now)")
	}
	t.row("  this node:", u.realNode+", "+u.realGPUs)
	if u.fabric != nil {
		t.row("  simulated:", fmt.Sprintf("%d nodes, %d GPUs of fabric %s (their ranks run here)", len(u.fabric.Nodes), u.fabric.NumGPUs(), u.fabric.Name))
	}
	t.row("  data:", u.dir+" (logs in up.log)")
	fmt.Fprintln(w, "gpucloud is up.")
	t.flush()
	if !next {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Next, in another terminal:")
	if ex := filepath.Join("examples", "hello", "job.yaml"); fileExists(ex) {
		fmt.Fprintf(w, "  gpucloud submit -f %s --wait   # a one-GPU job\n", ex)
		fmt.Fprintln(w, "  gpucloud get jobs")
		fmt.Fprintln(w, "  gpucloud demo                 # every example, end to end")
	} else {
		fmt.Fprintln(w, "  gpucloud demo                 # the example jobs, end to end")
		fmt.Fprintln(w, "  gpucloud get jobs")
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Ctrl-C stops (running jobs go back to the queue); `gpucloud up` again resumes.")
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// serveUntil runs until ctx ends (Ctrl-C), then stops cleanly; a second
// Ctrl-C stops at once.
func (u *upInstance) serveUntil(ctx context.Context, w io.Writer) error {
	select {
	case <-ctx.Done():
	case err := <-u.srvDone:
		u.srvDone <- err
		u.abort()
		return fmt.Errorf("the control plane stopped: %v (see %s)", err, filepath.Join(u.dir, "up.log"))
	}
	fmt.Fprintln(w, "\nstopping (Ctrl-C again to stop at once; the ranks then keep running and the next start adopts them)...")
	hard, cancel := secondSignal(time.Second)
	defer cancel()
	return u.stop(hard, w)
}

// secondSignal ends on a SIGINT or SIGTERM that arrives after quiet: the
// copy of the first Ctrl-C that a wrapper (make, timeout, a shell script)
// forwards a moment later is not a second one.
func secondSignal(quiet time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	start := time.Now()
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				if time.Since(start) >= quiet {
					cancel()
					return
				}
			}
		}
	}()
	return ctx, cancel
}

// stop drains our nodes (their gangs go back to the queue and their ranks
// are stopped), then stops the agents and the control plane. When ctx
// ends first, it stops without waiting for the ranks.
func (u *upInstance) stop(ctx context.Context, w io.Writer) error {
	u.termLvl.Set(slog.LevelError + 4) // the shutdown's reconnects are not news
	drained, running := u.drainAll(ctx)
	if running > 0 {
		fmt.Fprintf(w, "stopping %d running job(s); they go back to the queue and resume at the next start...\n", running)
	}
	if len(drained) > 0 {
		u.waitRanks(ctx, w)
	}
	u.agStop()
	u.agWG.Wait()
	u.srvStop()
	err := <-u.srvDone
	u.release()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("control plane: %w", err)
	}
	fmt.Fprintf(w, "stopped; the state is in %s\n", u.dir)
	return nil
}

// drainAll drains the nodes of ours that nobody cordoned, recording them
// first so that the next start uncordons them even after a crash here.
// It returns them and the number of jobs that ran there.
func (u *upInstance) drainAll(ctx context.Context) ([]string, int) {
	nodes, err := u.admCli.Nodes(ctx)
	if err != nil {
		u.log.Error("stop: listing nodes", "err", err)
		return nil, 0
	}
	ours := map[string]bool{}
	for _, a := range u.agents {
		ours[a.name] = true
	}
	var names []string
	for _, n := range nodes {
		if ours[n.Metadata.Name] && !n.Spec.Cordoned && !n.Spec.Draining {
			names = append(names, n.Metadata.Name)
		}
	}
	sort.Strings(names)
	u.state.Drained = names
	if err := u.saveState(); err != nil {
		u.log.Error("stop: saving state", "err", err)
	}
	running := 0
	if jobs, err := allJobs(ctx, u.admCli, client.JobFilter{Phase: api.PhaseRunning}); err == nil {
		running = len(jobs)
	}
	for _, name := range names {
		if _, err := u.admCli.NodeAction(ctx, name, "drain", "gpucloud up stopped; uncordoned at the next start"); err != nil {
			u.log.Error("stop: draining", "node", name, "err", err)
		}
	}
	return names, running
}

// waitRanks waits until no agent of ours runs a rank (the gangs were
// requeued, so the agents tear them down).
func (u *upInstance) waitRanks(ctx context.Context, w io.Writer) {
	deadline := time.Now().Add(u.o.grace + 15*time.Second)
	for {
		live := 0
		for _, a := range u.agents {
			live += len(a.a.Launcher().Running())
		}
		if live == 0 {
			return
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(w, "%d gang(s) still running after the grace period; stopping anyway (the next start adopts them)\n", live)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// abort stops whatever started, without draining (a failed start).
func (u *upInstance) abort() {
	if u.agStop != nil {
		u.agStop()
		u.agWG.Wait()
	}
	if u.srvStop != nil {
		u.srvStop()
		<-u.srvDone
	}
	u.release()
}

func (u *upInstance) release() {
	if u.logFile != nil {
		u.log.Info("gpucloud up: stopped")
		u.logFile.Close()
		u.logFile = nil
	}
	if u.lock != nil {
		u.lock.Close() // releases the flock
		u.lock = nil
	}
}

// dashboardHandler, when the dashboard is linked in (up_web.go), serves
// it beside the API.
var dashboardHandler func() http.Handler

// upVersion is what up's agents report.
const upVersion = "gpucloud-up"
