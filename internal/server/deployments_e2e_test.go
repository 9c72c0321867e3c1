package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
	"gpucloud/internal/store"
	"gpucloud/internal/testbin"
	"gpucloud/internal/testnet"
)

// loadGen keeps `target` clients calling the deployment through the
// server, each sending its next request when the last one is answered.
type loadGen struct {
	url, token string
	target     atomic.Int32
	ok, failed atomic.Int64
	stop       chan struct{}
	wg         sync.WaitGroup

	mu       sync.Mutex
	failures []string
	byRev    map[string]int
	replicas map[string]bool // replica IDs (X-Gpucloud-Replica) that answered
}

func startLoad(url, token string, maxClients int) *loadGen {
	g := &loadGen{url: url, token: token, stop: make(chan struct{}), byRev: map[string]int{}, replicas: map[string]bool{}}
	tr := &http.Transport{MaxIdleConnsPerHost: maxClients}
	hc := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	for i := 0; i < maxClients; i++ {
		g.wg.Add(1)
		go func(i int) {
			defer g.wg.Done()
			for {
				select {
				case <-g.stop:
					return
				default:
				}
				if int32(i) >= g.target.Load() {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				g.call(hc)
			}
		}(i)
	}
	return g
}

func (g *loadGen) call(hc *http.Client) {
	req, _ := http.NewRequest("POST", g.url, strings.NewReader(`{"prompt": "hello"}`))
	req.Header.Set("Authorization", "Bearer "+g.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		g.fail(err.Error())
		return
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		g.fail(fmt.Sprintf("%d %v %s", resp.StatusCode, err, b))
		return
	}
	var a struct{ Revision string }
	json.Unmarshal(b, &a)
	g.ok.Add(1)
	g.mu.Lock()
	g.byRev[a.Revision]++
	g.replicas[resp.Header.Get("X-Gpucloud-Replica")] = true
	g.mu.Unlock()
}

func (g *loadGen) fail(msg string) {
	g.failed.Add(1)
	g.mu.Lock()
	if len(g.failures) < 10 {
		g.failures = append(g.failures, msg)
	}
	g.mu.Unlock()
}

func (g *loadGen) finish() {
	close(g.stop)
	g.wg.Wait()
}

// killRanks kills the replica processes the agents leave behind (ranks
// outlive their agent on purpose).
func killRanks(dirs []string) {
	for _, d := range dirs {
		files, _ := filepath.Glob(filepath.Join(d, "jobs", "*", "gen-*", "rank-*", "shim.json"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			var p struct {
				PID int `json:"pid"`
			}
			if json.Unmarshal(b, &p) == nil && p.PID > 0 {
				syscall.Kill(-p.PID, syscall.SIGKILL)
			}
		}
	}
}

// startAgents runs n `gpucloud agent --fake-gpus 4` processes on
// loopback, connected to servers (comma-separated URLs), and waits for
// their nodes to be ready.
func startAgents(t *testing.T, ts *testServer, servers, token string, n int) {
	t.Helper()
	root := t.TempDir()
	var dataDirs []string
	t.Cleanup(func() { killRanks(dataDirs) }) // runs after the agents are killed
	for i := range n {
		name := fmt.Sprintf("node-%c", 'a'+i)
		dir := filepath.Join(root, name)
		dataDirs = append(dataDirs, dir)
		startProc(t, name, "agent", "--server", servers, "--token", token, "--node-name", name, "--address", "127.0.0.1",
			"--data-dir", dir, "--fake-gpus", "4", "--gpu-model", "H100-80GB", "--grace-period", "5s", "--log-level", "warn")
	}
	waitFor(t, 30*time.Second, fmt.Sprintf("%d ready nodes", n), func() bool {
		ns, err := ts.admin.Nodes(context.Background())
		ready := 0
		for _, n := range ns {
			if n.Status.Phase == api.NodeReady {
				ready++
			}
		}
		return err == nil && ready == n
	})
}

// TestDeployE2E runs a Deployment through a real server (embedded etcd),
// real agents (gpucloud agent --fake-gpus) and real model-server
// processes: it scales from 1 to at least 4 replicas under rising load,
// rolls to a new revision under load, and scales back down, and no
// request fails.
func TestDeployE2E(t *testing.T) {
	testbin.Gpucloud(t) // skips with -short
	model := testbin.Build(t, testbin.ModelServer)
	oldStep := deploymentStep
	deploymentStep = 200 * time.Millisecond
	t.Cleanup(func() { deploymentStep = oldStep })
	start := time.Now()

	ts := startServer(t, func(c *Config) {
		c.HeartbeatInterval = time.Second
		c.NodeLeaseTTL = 10 * time.Second
	})
	ctx := context.Background()
	putServingQueue(t, ts, 8)
	user := ts.tenant(t, "ml")
	userTok, err := ts.admin.CreateToken(ctx, api.TokenRequest{Name: "ml-load", Role: api.RoleTenant, Tenant: "ml"})
	if err != nil {
		t.Fatal(err)
	}
	agentTok, err := ts.admin.CreateToken(ctx, api.TokenRequest{Name: "agents", Role: api.RoleAgent})
	if err != nil {
		t.Fatal(err)
	}

	// Two nodes of 4 emulated GPUs.
	startAgents(t, ts, ts.url, agentTok.Token, 2)
	t.Logf("cluster up after %v", time.Since(start).Round(time.Millisecond))

	dep := &api.Deployment{
		APIVersion: api.Version, Kind: api.KindDeployment, Metadata: api.ObjectMeta{Name: "chat"},
		Spec: api.DeploymentSpec{
			Queue: "serving", GPUsPerReplica: 1, Command: []string{model},
			Env:       map[string]string{"MODEL_DELAY": "100ms", "MODEL_REVISION": "v1"},
			Replicas:  api.ReplicaBounds{Min: 1, Max: 6},
			Readiness: api.ReadinessSpec{Path: "/health", Period: api.Duration(200 * time.Millisecond)},
			Autoscale: &api.AutoscaleSpec{TargetInflight: 4, ScaleDownDelay: api.Duration(3 * time.Second)},
			Priority:  api.PriorityValue(api.PriorityClasses["high"]),
			Rollout:   api.RolloutSpec{DrainTimeout: api.Duration(20 * time.Second)},
		},
	}
	if err := user.Do(ctx, "POST", "/v1/deployments", dep, nil); err != nil {
		t.Fatal(err)
	}
	status := func() api.DeploymentStatus {
		var d api.Deployment
		if err := user.Do(ctx, "GET", "/v1/deployments/chat", nil, &d); err != nil {
			t.Logf("GET: %v", err)
		}
		return d.Status
	}
	// liveReplicas counts replica jobs that are not finished, by revision.
	liveReplicas := func() map[string]int {
		var l api.List[api.Job]
		out := map[string]int{}
		if err := user.Do(ctx, "GET", "/v1/jobs", nil, &l); err != nil {
			return nil
		}
		for _, j := range l.Items {
			if !j.Status.Phase.Terminal() {
				out[j.Spec.Env["MODEL_REVISION"]]++
			}
		}
		return out
	}
	t0 := time.Now()
	waitFor(t, 30*time.Second, "the first replica ready", func() bool { return status().Ready >= 1 })
	t.Logf("first replica ready %v after the deployment was created", time.Since(t0).Round(time.Millisecond))

	load := startLoad(ts.url+"/v1/deployments/chat/v1/completions", userTok.Token, 24)
	defer func() {
		select {
		case <-load.stop:
		default:
			load.finish()
		}
	}()

	// Rising load: 2, 8, then 20 clients (a target of 4 in flight per
	// replica wants 5 replicas).
	maxReady := 0
	for _, c := range []int32{2, 8, 20} {
		load.target.Store(c)
		time.Sleep(2 * time.Second)
	}
	t1 := time.Now()
	waitFor(t, 40*time.Second, "at least 4 ready replicas", func() bool {
		st := status()
		maxReady = max(maxReady, st.Ready)
		return st.Ready >= 4
	})
	st := status()
	t.Logf("scaled up: desired %d, ready %d (%s), %v after load reached 20 clients; %d ok, %d failed so far",
		st.Desired, st.Ready, st.ScaleReason, time.Since(t1).Round(time.Millisecond), load.ok.Load(), load.failed.Load())

	// Rolling update through the API, under the same load.
	oldRev := st.Revision
	dep.Spec.Env["MODEL_REVISION"] = "v2"
	if err := user.Do(ctx, "PUT", "/v1/deployments/chat", dep, nil); err != nil {
		t.Fatal(err)
	}
	okBefore, failedBefore := load.ok.Load(), load.failed.Load()
	t2 := time.Now()
	maxLive := 0
	waitFor(t, 60*time.Second, "the rolling update to complete", func() bool {
		live := liveReplicas()
		maxLive = max(maxLive, live["v1"]+live["v2"])
		st = status()
		return st.Revision != oldRev && live["v1"] == 0 && live["v2"] == st.Desired && st.UpdatedReady == st.Desired && st.Ready == st.Desired
	})
	t.Logf("rolling update %s -> %s of %d replicas in %v; at most %d replica jobs at once; %d requests during it, %d failed",
		oldRev, st.Revision, st.Desired, time.Since(t2).Round(time.Millisecond), maxLive,
		load.ok.Load()-okBefore+load.failed.Load()-failedBefore, load.failed.Load()-failedBefore)
	if maxLive > st.Desired+1 {
		t.Errorf("surge: %d replica jobs at once for %d desired (max surge 1)", maxLive, st.Desired)
	}
	load.mu.Lock()
	load.byRev = map[string]int{}
	load.mu.Unlock()
	time.Sleep(500 * time.Millisecond)
	load.mu.Lock()
	if load.byRev["v1"] > 0 || load.byRev["v2"] == 0 {
		t.Errorf("answers after the update by revision: %v", load.byRev)
	}
	load.mu.Unlock()

	// Falling load: back down to one replica after the scale-down window.
	load.target.Store(2)
	okBefore, failedBefore = load.ok.Load(), load.failed.Load()
	t3 := time.Now()
	waitFor(t, 40*time.Second, "scale-down to 1 replica", func() bool {
		live := liveReplicas()
		st = status()
		return st.Desired == 1 && live["v2"] == 1 && st.Ready == 1
	})
	t.Logf("scaled down to %d after %v (%s); %d requests during it, %d failed",
		st.Ready, time.Since(t3).Round(time.Millisecond), st.ScaleReason, load.ok.Load()-okBefore+load.failed.Load()-failedBefore, load.failed.Load()-failedBefore)
	load.finish()

	load.mu.Lock()
	t.Logf("requests: %d ok, %d failed, over %d replicas; max ready %d; test took %v", load.ok.Load(), load.failed.Load(), len(load.replicas), maxReady, time.Since(start).Round(time.Millisecond))
	if load.failed.Load() > 0 {
		t.Errorf("%d requests failed, e.g. %q", load.failed.Load(), load.failures)
	}
	load.mu.Unlock()

	// Metrics per deployment, on the server's /metrics.
	_, m := raw(t, "GET", ts.url+"/metrics", "", "", nil)
	for _, want := range []string{`gpucloud_serving_requests_total{code="2xx",deployment="chat"}`, `gpucloud_serving_request_duration_seconds_bucket{deployment="chat"`,
		`gpucloud_serving_inflight_requests{deployment="chat"}`, `gpucloud_serving_replicas{deployment="chat",state="ready"} 1`} {
		if !strings.Contains(string(m), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// Deleting the deployment drains and stops its replica.
	if err := user.Do(ctx, "DELETE", "/v1/deployments/chat", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the replicas to go", func() bool {
		var l api.List[api.Job]
		return user.Do(ctx, "GET", "/v1/jobs", nil, &l) == nil && len(l.Items) == 0
	})
}

// TestDeployFailover stops the leader of two server replicas: the new
// leader adopts the running replicas (no new replica job) and routes to
// them.
func TestDeployFailover(t *testing.T) {
	testbin.Gpucloud(t) // skips with -short
	model := testbin.Build(t, testbin.ModelServer)
	oldStep := deploymentStep
	deploymentStep = 200 * time.Millisecond
	t.Cleanup(func() { deploymentStep = oldStep })
	ctx := context.Background()

	etcd, err := store.StartMember(ctx, store.MemberConfig{Dir: t.TempDir(), NoFsync: true,
		ClientURL: fmt.Sprintf("http://127.0.0.1:%d", testnet.FreePort(t)), PeerURL: fmt.Sprintf("http://127.0.0.1:%d", testnet.FreePort(t))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	a := startServer(t, func(c *Config) {
		c.EtcdEndpoints, c.LeaderTTL, c.HeartbeatInterval, c.NodeLeaseTTL = etcd.Endpoints, 2, time.Second, 10*time.Second
	})
	b, err := New(Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), EtcdEndpoints: etcd.Endpoints, LeaderTTL: 2,
		HeartbeatInterval: time.Second, NodeLeaseTTL: 10 * time.Second, CycleInterval: 20 * time.Millisecond, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	bctx, bcancel := context.WithCancel(ctx)
	bdone := make(chan error, 1)
	go func() { bdone <- b.Run(bctx) }()
	t.Cleanup(func() { bcancel(); <-bdone })
	<-b.Ready()
	burl := "http://" + b.Addr()

	tok, err := a.admin.CreateToken(ctx, api.TokenRequest{Name: "agents", Role: api.RoleAgent})
	if err != nil {
		t.Fatal(err)
	}
	startAgents(t, a, a.url+","+burl, tok.Token, 1)
	dep := &api.Deployment{
		APIVersion: api.Version, Kind: api.KindDeployment, Metadata: api.ObjectMeta{Name: "chat"},
		Spec: api.DeploymentSpec{GPUsPerReplica: 1, Command: []string{model}, Env: map[string]string{"MODEL_DELAY": "10ms"},
			Replicas: api.ReplicaBounds{Min: 2}, Readiness: api.ReadinessSpec{Path: "/health", Period: api.Duration(200 * time.Millisecond)}},
	}
	if err := a.admin.Do(ctx, "POST", "/v1/deployments", dep, nil); err != nil {
		t.Fatal(err)
	}
	call := func(base string) int {
		req, _ := http.NewRequest("POST", base+"/v1/deployments/chat/v1/completions", strings.NewReader(`{"prompt": "x"}`))
		req.Header.Set("Authorization", "Bearer "+a.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	jobIDs := func(c interface {
		Do(context.Context, string, string, any, any) error
	}) []string {
		var l api.List[api.Job]
		if err := c.Do(ctx, "GET", "/v1/jobs", nil, &l); err != nil {
			return nil
		}
		var ids []string
		for _, j := range l.Items {
			if !j.Status.Phase.Terminal() {
				ids = append(ids, j.Metadata.ID)
			}
		}
		return ids
	}
	var d api.Deployment
	waitFor(t, 30*time.Second, "two ready replicas", func() bool {
		return a.admin.Do(ctx, "GET", "/v1/deployments/chat", nil, &d) == nil && d.Status.Ready == 2
	})
	if code := call(a.url); code != 200 {
		t.Fatalf("through the leader: %d", code)
	}
	if code := call(burl); code != 200 {
		t.Fatalf("through the follower (forwarded to the leader): want 200, got %d", code)
	}
	before := jobIDs(a.admin)

	stopped := time.Now()
	a.stop()
	waitFor(t, 15*time.Second, "the other replica to lead", b.IsLeader)
	elected := time.Since(stopped)
	waitFor(t, 15*time.Second, "traffic through the new leader", func() bool { return call(burl) == 200 })
	// A graceful stop resigns, so the other replica leads at once (a
	// killed leader's session expires after LeaderTTL first).
	t.Logf("old leader stopped (resigning): new leader %v and the first request through it answered %v after the stop began",
		elected.Round(time.Millisecond), time.Since(stopped).Round(time.Millisecond))
	bc := clientFor(burl, a.token)
	after := jobIDs(bc)
	if strings.Join(before, ",") != strings.Join(after, ",") {
		t.Fatalf("replica jobs changed across the failover: %v -> %v", before, after)
	}
	for range 20 {
		if code := call(burl); code != 200 {
			t.Fatalf("after failover: %d", code)
		}
	}
}

func clientFor(url, token string) *client.Client {
	c := client.New([]string{url}, token, client.Options{})
	c.Retry = 5 * time.Second
	return c
}
