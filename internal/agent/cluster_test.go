package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
	"gpucloud/internal/testbin"
	"gpucloud/internal/testnet"
)

// The end-to-end tests run the real binary: a control plane (gpucloud
// server on an embedded etcd) and node agents (gpucloud agent), each a
// process of its own, on different addresses: network namespaces joined by
// a bridge when the test runs as root with iproute2, 127.0.0.x otherwise.

func TestMain(m *testing.M) { testbin.Main(m) }

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the test directory")
		}
		dir = parent
	}
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a gpucloud process of the test.
type proc struct {
	name string
	args []string
	ns   string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// node is an agent and the host it plays.
type node struct {
	name, addr, ifname, ns string
	dataDir, ckptRoot      string
	extra                  []string
	agent                  *proc
}

type cluster struct {
	t         testing.TB
	bin       string
	dir       string
	netns     bool
	nsPrefix  string
	serverNS  string
	serverURL string
	server    *proc
	admin     *client.Client
	user      *client.Client
	agentTok  string
	nodes     []*node
	procs     []*proc
}

var (
	netnsOnce sync.Once
	netnsOK   bool
)

// canNetns reports whether the test may build network namespaces: root,
// iproute2, and a kernel and container that allow it (tried once).
func canNetns() bool {
	netnsOnce.Do(func() {
		if os.Geteuid() != 0 || os.Getenv("GPUCLOUD_E2E_NO_NETNS") != "" {
			return
		}
		if _, err := exec.LookPath("ip"); err != nil {
			return
		}
		var b [3]byte
		rand.Read(b[:])
		probe := "gpcprobe" + hex.EncodeToString(b[:])
		if exec.Command("ip", "netns", "add", probe).Run() != nil {
			return
		}
		netnsOK = exec.Command("ip", "-n", probe, "link", "add", "br0", "type", "bridge").Run() == nil
		exec.Command("ip", "netns", "del", probe).Run()
	})
	return netnsOK
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// newCluster starts a server and one agent per entry of gpus (the number
// of emulated GPUs of that node).
func newCluster(t testing.TB, gpus []int, agentArgs ...string) *cluster {
	t.Helper()
	return startCluster(t, canNetns(), gpus, agentArgs...)
}

func startCluster(t testing.TB, netns bool, gpus []int, agentArgs ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, bin: testbin.Gpucloud(t), dir: t.TempDir(), netns: netns}
	// Cleanups run last-in first-out: this one runs after every process
	// of the test has stopped, and kills the ranks the agents leave behind
	// (on purpose: ranks outlive their agent).
	t.Cleanup(c.cleanupRanks)
	var suffix [3]byte
	rand.Read(suffix[:])
	c.nsPrefix = "gpc" + hex.EncodeToString(suffix[:])
	serverIP := "127.0.0.1"
	if c.netns {
		serverIP = "10.200.0.254"
		c.setupNetns(len(gpus))
	}
	t.Logf("end-to-end cluster: %d nodes, network namespaces %v", len(gpus), c.netns)
	port := testnet.FreePort(t)
	c.serverURL = fmt.Sprintf("http://%s:%d", serverIP, port)
	sdir := filepath.Join(c.dir, "server")
	c.server = c.start("server", c.serverNS, "server", "--listen", fmt.Sprintf("%s:%d", serverIP, port), "--data-dir", sdir,
		"--etcd-client-url", fmt.Sprintf("http://127.0.0.1:%d", testnet.FreePort(t)), "--etcd-peer-url", fmt.Sprintf("http://127.0.0.1:%d", testnet.FreePort(t)),
		"--node-lease-ttl", "4s", "--heartbeat-interval", "1s", "--cycle-interval", "50ms", "--unsafe-no-fsync", "--log-level", "warn")
	var tok []byte
	waitFor(t, 60*time.Second, "the server's admin token", func() bool {
		var err error
		tok, err = os.ReadFile(filepath.Join(sdir, "admin.token"))
		return err == nil && len(bytes.TrimSpace(tok)) > 0
	})
	c.admin = c.client(strings.TrimSpace(string(tok)))
	ctx := context.Background()
	waitFor(t, 60*time.Second, "a leader", func() bool {
		var ci struct{ Leader bool }
		err := c.admin.Do(ctx, "GET", "/v1/cluster", nil, &ci)
		return err == nil && ci.Leader
	})
	at, err := c.admin.CreateToken(ctx, api.TokenRequest{Name: "agents", Role: api.RoleAgent})
	if err != nil {
		t.Fatal(err)
	}
	c.agentTok = at.Token
	if _, err := c.admin.CreateTenant(ctx, &api.Tenant{Metadata: api.ObjectMeta{Name: "ml"}}); err != nil {
		t.Fatal(err)
	}
	ut, err := c.admin.CreateToken(ctx, api.TokenRequest{Role: api.RoleTenant, Tenant: "ml"})
	if err != nil {
		t.Fatal(err)
	}
	c.user = c.client(ut.Token)
	for i, g := range gpus {
		n := &node{name: fmt.Sprintf("node-%c", 'a'+i), dataDir: filepath.Join(c.dir, fmt.Sprintf("agent-%c", 'a'+i))}
		n.ckptRoot = filepath.Join(n.dataDir, "checkpoints")
		if c.netns {
			n.ns = fmt.Sprintf("%s-%c", c.nsPrefix, 'a'+i)
			n.addr = fmt.Sprintf("10.200.0.%d", i+1)
			n.ifname = fmt.Sprintf("%s%c0", c.nsPrefix, 'a'+i)
		} else {
			n.addr = fmt.Sprintf("127.0.0.%d", i+2)
			n.ifname = "lo"
		}
		n.extra = append([]string{"--fake-gpus", strconv.Itoa(g), "--gpu-model", "H100-80GB"}, agentArgs...)
		c.nodes = append(c.nodes, n)
		c.startAgent(n, c.agentTok)
	}
	waitFor(t, 60*time.Second, "the nodes to register", func() bool {
		ns, err := c.admin.Nodes(ctx)
		ready := 0
		for _, n := range ns {
			if n.Status.Phase == api.NodeReady {
				ready++
			}
		}
		return err == nil && ready == len(gpus)
	})
	return c
}

func (c *cluster) client(token string) *client.Client {
	cl := client.New([]string{c.serverURL}, token, client.Options{Transport: c.transport()})
	cl.Retry = 10 * time.Second
	return cl
}

// transport reaches the server: in the server's namespace when there is
// one (the test process stays in its own).
func (c *cluster) transport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.netns {
		ns := c.serverNS
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialInNetns(ctx, ns, network, addr)
		}
	}
	return tr
}

// setupNetns makes a namespace for the server with a bridge, and one per
// node joined to it by a veth pair: 10.200.0.254 is the server, 10.200.0.N
// node N. Nothing is made outside these namespaces; they go at cleanup.
func (c *cluster) setupNetns(nodes int) {
	t := c.t
	c.serverNS = c.nsPrefix + "-s"
	run(t, "ip", "netns", "add", c.serverNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", c.serverNS).Run() })
	run(t, "ip", "-n", c.serverNS, "link", "set", "lo", "up")
	run(t, "ip", "-n", c.serverNS, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", c.serverNS, "addr", "add", "10.200.0.254/24", "dev", "br0")
	run(t, "ip", "-n", c.serverNS, "link", "set", "br0", "up")
	for i := range nodes {
		ns := fmt.Sprintf("%s-%c", c.nsPrefix, 'a'+i)
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		inNode := fmt.Sprintf("%s%c0", c.nsPrefix, 'a'+i)
		onBridge := fmt.Sprintf("%s%c1", c.nsPrefix, 'a'+i)
		run(t, "ip", "-n", c.serverNS, "link", "add", onBridge, "type", "veth", "peer", "name", inNode, "netns", ns)
		run(t, "ip", "-n", c.serverNS, "link", "set", onBridge, "master", "br0")
		run(t, "ip", "-n", c.serverNS, "link", "set", onBridge, "up")
		run(t, "ip", "-n", ns, "addr", "add", fmt.Sprintf("10.200.0.%d/24", i+1), "dev", inNode)
		run(t, "ip", "-n", ns, "link", "set", inNode, "up")
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
}

// start runs the gpucloud binary (in a namespace when ns is set).
func (c *cluster) start(name, ns string, args ...string) *proc {
	p := &proc{name: name, args: args, ns: ns, out: &syncBuffer{}, done: make(chan struct{})}
	argv := append([]string{c.bin}, args...)
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// Its own process group: ^C on the test does not reach it, and the
	// test stops it on purpose.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	c.procs = append(c.procs, p)
	c.t.Cleanup(func() { c.stop(p) })
	return p
}

// stop ends a process with SIGTERM (SIGKILL after 10 s).
func (c *cluster) stop(p *proc) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	if c.t.Failed() {
		c.t.Logf("--- output of %s:\n%s", p.name, p.out.String())
	}
}

// kill ends a process at once, as a crash would.
func (c *cluster) kill(p *proc) {
	p.cmd.Process.Kill()
	<-p.done
}

func (c *cluster) startAgent(n *node, token string) {
	args := append([]string{"agent", "--server", c.serverURL, "--token", token, "--node-name", n.name, "--address", n.addr,
		"--data-dir", n.dataDir, "--checkpoint-root", n.ckptRoot, "--grace-period", "5s",
		"--rank-env", "GLOO_SOCKET_IFNAME=" + n.ifname, "--log-level", "debug"}, n.extra...)
	n.agent = c.start("agent "+n.name, n.ns, args...)
}

// cleanupRanks kills whatever ranks the agents left.
func (c *cluster) cleanupRanks() {
	for _, n := range c.nodes {
		files, _ := filepath.Glob(filepath.Join(n.dataDir, "jobs", "*", "gen-*", "rank-*", "shim.json"))
		for _, f := range files {
			if pid := shimPID(f); pid > 0 {
				syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	}
}

func shimPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var p struct {
		PID int `json:"pid"`
	}
	json.Unmarshal(b, &p)
	return p.PID
}

// rankProcess finds the rank's own process (the child of its shim).
func rankProcess(t testing.TB, n *node, job string, gen, rank int) int {
	t.Helper()
	shim := shimPID(filepath.Join(n.dataDir, "jobs", job, "gen-"+strconv.Itoa(gen), "rank-"+strconv.Itoa(rank), "shim.json"))
	if shim == 0 {
		t.Fatalf("no shim for %s generation %d rank %d on %s", job, gen, rank, n.name)
	}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, s := range stats {
		b, err := os.ReadFile(s)
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(shim) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(s)))
			return pid
		}
	}
	t.Fatalf("shim %d has no child", shim)
	return 0
}

// logs reads a rank's output through the server.
func (c *cluster) logs(job string, rank int) string {
	rc, err := c.user.Logs(context.Background(), job, rank, false)
	if err != nil {
		return ""
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

func (c *cluster) submit(j *api.Job) *api.Job {
	c.t.Helper()
	j.APIVersion, j.Kind = api.Version, api.KindJob
	out, err := c.user.Submit(context.Background(), j)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

func (c *cluster) job(id string) *api.Job {
	c.t.Helper()
	j, err := c.user.Job(context.Background(), id)
	if err != nil {
		c.t.Fatal(err)
	}
	return j
}

func (c *cluster) waitPhase(id string, phase api.Phase, d time.Duration) *api.Job {
	c.t.Helper()
	var j *api.Job
	waitFor(c.t, d, "job "+id+" "+string(phase), func() bool {
		j = c.job(id)
		if j.Status.Phase.Terminal() && j.Status.Phase != phase {
			c.t.Fatalf("job %s ended %s (%s), want %s", id, j.Status.Phase, j.Status.Reason, phase)
		}
		return j.Status.Phase == phase
	})
	return j
}

func waitFor(t testing.TB, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	return len(f) > 0 && f[0] != "Z"
}
