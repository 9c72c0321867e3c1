package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
	"gpucloud/internal/server"
	"gpucloud/internal/server/servertest"
	"gpucloud/internal/topology"
)

// labFabric is a small fleet with the shape of a large one: two blocks of
// two leaves of two 8-GPU nodes.
const labFabric = `apiVersion: gpucloud/v1
kind: Fabric
metadata: {name: lab-64}
spec:
  nodeClasses:
    - {name: h100x8, gpuModel: H100-80GB, gpus: 8, gpuMemoryGiB: 80, rails: 8, railGbps: 400}
  domains:
    - {name: cluster, level: cluster}
    - {name: block-a, level: block, parent: cluster}
    - {name: block-b, level: block, parent: cluster}
    - {name: leaf-a1, level: leaf, parent: block-a, nodes: [{hosts: "gpu-[00-01]", class: h100x8}]}
    - {name: leaf-a2, level: leaf, parent: block-a, nodes: [{hosts: "gpu-[02-03]", class: h100x8}]}
    - {name: leaf-b1, level: leaf, parent: block-b, nodes: [{hosts: "gpu-[04-05]", class: h100x8}]}
    - {name: leaf-b2, level: leaf, parent: block-b, nodes: [{hosts: "gpu-[06-07]", class: h100x8}]}
`

// startControlPlane runs the real server on a real single-member etcd and
// returns it with the admin token.
func startControlPlane(t *testing.T, fab *topology.Fabric) (*server.Server, string) {
	t.Helper()
	return servertest.Start(t, t.TempDir(), func(c *server.Config) {
		c.NodeLeaseTTL = 3 * time.Second
		c.Fabric = fab
	})
}

// dashboardMux serves the API and the dashboard from one origin, as
// `gpucloud server` and `gpucloud up` do. The fabric the page draws comes
// from the server's GET /v1/fabric, which must list fab's nodes.
func dashboardMux(t *testing.T, s *server.Server, token string, fab *topology.Fabric) http.Handler {
	t.Helper()
	apiH := s.Handler()
	mux := http.NewServeMux()
	for _, p := range []string{"/v1/", "/healthz", "/readyz", "/metrics"} {
		mux.Handle(p, apiH)
	}
	probe := httptest.NewRequest("GET", "/v1/fabric", nil)
	probe.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	apiH.ServeHTTP(rec, probe)
	var doc topology.Document
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &doc) != nil {
		t.Fatalf("GET /v1/fabric: %d %s", rec.Code, rec.Body.Bytes())
	}
	served, _, err := topology.Parse("GET /v1/fabric", rec.Body.Bytes(), topology.FormatNative)
	if err != nil {
		t.Fatalf("GET /v1/fabric: %v", err)
	}
	for _, n := range fab.Nodes {
		if _, ok := served.NodeByName(n.Name); !ok {
			t.Fatalf("GET /v1/fabric lacks node %s", n.Name)
		}
	}
	mux.Handle("/", Handler())
	return mux
}

// agent speaks the node-agent protocol over HTTP without processes: each
// rank of a new assignment reports started, then exits 0 at once, or when
// the test releases its job.
type agent struct {
	c         *client.Client
	name      string
	unhealthy []int

	mu      sync.Mutex
	seen    map[string]int
	running map[string]int
	held    map[string]chan struct{}
}

func registration(name string) *api.NodeRegistration {
	r := &api.NodeRegistration{Name: name, Address: "127.0.0.1", AgentVersion: "web-test"}
	for i := 0; i < 8; i++ {
		r.Inventory.GPUs = append(r.Inventory.GPUs, api.GPU{Index: i, UUID: fmt.Sprintf("GPU-%s-%d", name, i), Model: "H100-80GB", MemoryMiB: 81559, Emulated: true})
	}
	r.Inventory.HCAs = []api.HCA{{Name: "mlx5_0", RateGbps: 400, State: "ACTIVE"}}
	return r
}

// startAgent registers a node; with beat false it never heartbeats, so the
// node goes Down when its lease expires.
func startAgent(t *testing.T, c *client.Client, name string, beat bool, unhealthy []int, held map[string]chan struct{}) *agent {
	t.Helper()
	a := &agent{c: c, name: name, unhealthy: unhealthy, seen: map[string]int{}, running: map[string]int{}, held: held}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	if _, err := c.Register(ctx, registration(name)); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	if !beat {
		return a
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			a.mu.Lock()
			hb := &api.Heartbeat{Unhealthy: a.unhealthy}
			for j, g := range a.running {
				hb.Running = append(hb.Running, api.RunningJob{Job: j, Generation: g})
			}
			a.mu.Unlock()
			if err := c.Heartbeat(ctx, name, hb); client.IsCode(err, http.StatusGone) {
				c.Register(ctx, registration(name))
			}
			select {
			case <-ctx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			c.WatchAssignments(ctx, name, func(set api.AssignmentSet) error {
				for _, as := range set.Assignments {
					a.mu.Lock()
					g, ok := a.seen[as.Job]
					fresh := !ok || g < as.Generation
					if fresh {
						a.seen[as.Job], a.running[as.Job] = as.Generation, as.Generation
					}
					a.mu.Unlock()
					if fresh {
						wg.Add(1)
						go func() { defer wg.Done(); a.run(ctx, as) }()
					}
				}
				return nil
			})
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return a
}

func (a *agent) run(ctx context.Context, as api.Assignment) {
	var started, exited []api.RankEvent
	for _, p := range as.Processes {
		started = append(started, api.RankEvent{Job: as.Job, Generation: as.Generation, Rank: p.Rank, Event: api.RankStarted})
		exited = append(exited, api.RankEvent{Job: as.Job, Generation: as.Generation, Rank: p.Rank, Event: api.RankExited})
	}
	a.c.Report(ctx, a.name, started...)
	if ch := a.held[as.Name]; ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
	a.c.Report(ctx, a.name, exited...)
	a.mu.Lock()
	delete(a.running, as.Job)
	a.mu.Unlock()
}

func job(name string, replicas, gpus int, queue string) *api.Job {
	return &api.Job{APIVersion: api.Version, Kind: api.KindJob, Metadata: api.ObjectMeta{Name: name},
		Spec: api.JobSpec{Queue: queue, Replicas: replicas, GPUsPerReplica: gpus, Launch: api.LaunchPerNode, Command: []string{"true"}}}
}

func waitPhase(t *testing.T, c *client.Client, id string, phase api.Phase) *api.Job {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		j, err := c.Job(context.Background(), id)
		if err == nil && j.Status.Phase == phase {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s never %s (last %+v, %v)", id, phase, j, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDashboardLive runs the real control plane with agents that speak
// its protocol, opens the dashboard in chromium, and watches a submitted
// job turn Running (with its placement on the map) and then Succeeded.
func TestDashboardLive(t *testing.T) {
	chromiumPath(t) // skip before starting anything
	fab, _, err := topology.Parse("lab-64.yaml", []byte(labFabric), topology.FormatNative)
	if err != nil {
		t.Fatal(err)
	}
	s, token := startControlPlane(t, fab)
	srv := httptest.NewServer(dashboardMux(t, s, token, fab))
	t.Cleanup(func() {
		srv.CloseClientConnections() // the page's watch streams never end by themselves
		srv.Close()
	})
	ctx := context.Background()
	admin := client.New([]string{srv.URL}, token, client.Options{})

	tenant := func(name string, quota int) *client.Client {
		if _, err := admin.CreateTenant(ctx, &api.Tenant{Metadata: api.ObjectMeta{Name: name}}); err != nil {
			t.Fatal(err)
		}
		if quota > 0 {
			if _, err := admin.PutQueue(ctx, &api.Queue{Metadata: api.ObjectMeta{Name: name}, Spec: api.QueueSpec{Quota: quota, Tenants: []string{name}}}); err != nil {
				t.Fatal(err)
			}
		}
		tok, err := admin.CreateToken(ctx, api.TokenRequest{Role: api.RoleTenant, Tenant: name})
		if err != nil {
			t.Fatal(err)
		}
		return client.New([]string{srv.URL}, tok.Token, client.Options{})
	}
	research, vision := tenant("research", 16), tenant("vision", 0)

	// gpu-00..05 heartbeat (gpu-05 with a failed GPU 3), gpu-06 registers
	// and falls silent, gpu-07 never registers; gpu-04 is cordoned.
	release := make(chan struct{})
	held := map[string]chan struct{}{"train-llm": release}
	for i := 0; i < 7; i++ {
		name := fmt.Sprintf("gpu-%02d", i)
		var bad []int
		if i == 5 {
			bad = []int{3}
		}
		startAgent(t, admin, name, i != 6, bad, held)
	}
	if _, err := admin.NodeAction(ctx, "gpu-04", "cordon", "fan replacement"); err != nil {
		t.Fatal(err)
	}
	eval1, err := vision.Submit(ctx, job("eval-resnet", 1, 4, ""))
	if err != nil {
		t.Fatal(err)
	}
	waitPhase(t, vision, eval1.Metadata.ID, api.PhaseSucceeded)
	big, err := vision.Submit(ctx, job("pretrain-vit", 6, 8, ""))
	if err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t, 50*time.Second) // closed first: its cleanup runs before the servers'
	// Without a token the page asks for one, and says why a bad one fails.
	b.do(t, "opening the dashboard without a token", chromedp.Navigate(srv.URL+"/"))
	b.waitJS(t, "the sign-in dialog", `document.querySelector('#login').open`, 5*time.Second)
	b.do(t, "signing in with a wrong token",
		chromedp.SendKeys(chromedp.CSS("#token"), "gct_wrong"),
		chromedp.Click(chromedp.CSS(`#login button[type="submit"]`)))
	b.waitJS(t, "the sign-in error", `document.querySelector('#login-error').textContent.includes('invalid token')`, 5*time.Second)

	b.do(t, "opening the dashboard", chromedp.Navigate(srv.URL+"/#token="+token))
	b.waitJS(t, "the page to start", `document.body.dataset.ready === 'true'`, 10*time.Second)
	if loc := eval[string](t, b, `location.href`); strings.Contains(loc, token) {
		t.Errorf("the token stays in the address bar: %s", loc)
	}
	b.waitJS(t, "the seven registered nodes in the node table", `document.querySelectorAll('#nodes tr[data-node]').length === 7`, 10*time.Second)
	b.waitJS(t, "the 64 GPUs of the fabric", `gpucloud.summary().gpus === 64 && gpucloud.summary().conn.jobs === 'live'`, 5*time.Second)
	b.waitJS(t, "gpu-06 shown down once its lease expires", `document.querySelector('#nodes tr[data-node="gpu-06"]').textContent.includes('down')`, 15*time.Second)
	for node, want := range map[string]string{"gpu-04": "cordoned", "gpu-05": "GPU 3 unhealthy", "gpu-00": "ready"} {
		got := eval[string](t, b, fmt.Sprintf(`document.querySelector('#nodes tr[data-node=%q]').textContent`, node))
		if !strings.Contains(got, want) {
			t.Errorf("node row %s: %q, want %q", node, got, want)
		}
	}
	if got := eval[string](t, b, `document.querySelector('#node-summary').textContent`); !strings.Contains(got, "1 not registered") {
		t.Errorf("node summary %q does not count gpu-07 as not registered", got)
	}
	b.waitJS(t, "the finished eval job", fmt.Sprintf(`document.querySelector('#recent tr[data-job=%q][data-phase="Succeeded"]')`, eval1.Metadata.ID), 5*time.Second)
	b.waitJS(t, "the waiting job with its reason", fmt.Sprintf(`/^needs|waiting|quota|behind/.test((document.querySelector('#queue tr[data-job=%q] td.reason') || {}).textContent)`, big.Metadata.ID), 10*time.Second)
	checkHostlists(t, b)

	// The job under test: two 8-GPU replicas in one leaf.
	train := job("train-llm", 2, 8, "research")
	train.Spec.Topology.Required = "leaf"
	train, err = research.Submit(ctx, train)
	if err != nil {
		t.Fatal(err)
	}
	id := train.Metadata.ID
	b.waitJS(t, "the job Running on the page", fmt.Sprintf(`document.querySelector('#running tr[data-job=%q]')`, id), 15*time.Second)
	running := waitPhase(t, research, id, api.PhaseRunning)
	nodes, err := running.Status.Placement.Expand()
	if err != nil || len(nodes) != 2 {
		t.Fatalf("placement %+v: %v", running.Status.Placement, err)
	}
	for _, n := range nodes {
		for g := 0; g < 8; g++ {
			b.waitJS(t, fmt.Sprintf("%s GPU %d drawn as the job's", n.Node, g), fmt.Sprintf(`gpucloud.gpu(%q, %d).job === %q`, n.Node, g, id), 2*time.Second)
		}
	}
	if got := eval[string](t, b, `document.querySelector('#tenants tr[data-tenant="research"]').textContent`); !strings.Contains(got, "16") || !strings.Contains(got, "100%") {
		t.Errorf("research usage row %q: want 16 GPUs, 100%% of its quota", got)
	}
	b.do(t, "selecting the job", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#running tr[data-job=%q]`, id))))
	b.waitJS(t, "the placement highlighted", `!document.querySelector('#selection').hidden`, 2*time.Second)
	other := eval[int](t, b, `gpucloud.gpu('gpu-07', 0).colour`)
	mine := eval[int](t, b, fmt.Sprintf(`gpucloud.gpu(%q, 0).colour`, nodes[0].Node))
	if other < 64 || mine >= 64 {
		t.Errorf("highlight: the job's GPU has colour %d, another %d; want the others dimmed (>= 64)", mine, other)
	}
	b.screenshot(t, "dashboard-running.png")

	close(release)
	b.waitJS(t, "the job Succeeded on the page", fmt.Sprintf(`document.querySelector('#recent tr[data-job=%q][data-phase="Succeeded"]') && !document.querySelector('#running tr[data-job=%q]')`, id, id), 15*time.Second)
	b.waitJS(t, "its GPUs free again", fmt.Sprintf(`gpucloud.gpu(%q, 0).job === ''`, nodes[0].Node), 2*time.Second)
	b.screenshot(t, "dashboard-succeeded.png")

	// Coloured by health: a failed GPU, a cordoned node, a node down and a
	// node without an agent each have their colour (palette indices of
	// heatmap.js: UNREG 2, DOWN 3, BAD 4, CORDON 5, HFREE 9).
	eval[bool](t, b, `(() => { const s = document.querySelector('#mode'); s.value = 'health'; s.dispatchEvent(new Event('change')); return true; })()`)
	b.waitJS(t, "the health colours", `gpucloud.gpu('gpu-05', 3).colour === 4 && gpucloud.gpu('gpu-05', 2).colour === 9 && gpucloud.gpu('gpu-04', 0).colour === 5 && gpucloud.gpu('gpu-06', 0).colour === 3 && gpucloud.gpu('gpu-07', 0).colour === 2`, 2*time.Second)
	b.screenshot(t, "dashboard-health.png")

	// A tenant sees its own jobs; another tenant's GPUs are drawn as taken,
	// without naming the job.
	hold := make(chan struct{})
	defer close(hold)
	held["serve-vision"] = hold
	serve, err := vision.Submit(ctx, job("serve-vision", 1, 8, ""))
	if err != nil {
		t.Fatal(err)
	}
	serving := waitPhase(t, vision, serve.Metadata.ID, api.PhaseRunning)
	servingNodes, _ := serving.Status.Placement.Expand()
	rtok, err := admin.CreateToken(ctx, api.TokenRequest{Role: api.RoleTenant, Tenant: "research"})
	if err != nil {
		t.Fatal(err)
	}
	b.do(t, "opening the dashboard as a tenant", chromedp.Navigate(srv.URL+"/#token="+rtok.Token))
	b.waitJS(t, "the tenant's page", `document.body.dataset.ready === 'true' && document.querySelector('#who').textContent === 'tenant · research'`, 10*time.Second)
	b.waitJS(t, "research's finished job", fmt.Sprintf(`document.querySelector('#recent tr[data-job=%q]')`, id), 5*time.Second)
	b.waitJS(t, "vision's GPUs drawn as another tenant's", fmt.Sprintf(`gpucloud.gpu(%q, 0).colour === 7 && gpucloud.gpu(%q, 0).job === ''`, servingNodes[0].Node, servingNodes[0].Node), 5*time.Second)
	if n := eval[int](t, b, `document.querySelectorAll('#queue tr[data-job], #running tr[data-job]').length`); n != 0 {
		t.Errorf("a research token shows %d of vision's jobs", n)
	}
	b.check(t)
}

// checkHostlists compares the page's hostlist expansion with the
// topology package's on well-formed and broken expressions.
func checkHostlists(t *testing.T, b *browser) {
	t.Helper()
	type result struct {
		Names []string
		Error string
	}
	for _, expr := range []string{"gpu-[00-07]", "n[1,3,5-7]", "r[1-2]n[01-04]", "a,b[08-11],c", "switch.2.[1-6]", "x[9-11]", "n[1-3", "n[3-1]", "n[]", "n1]"} {
		want, werr := topology.ExpandHostlist(expr)
		got := eval[result](t, b, fmt.Sprintf(`gpucloud.expandHostlist(%q)`, expr))
		if (werr != nil) != (got.Error != "") {
			t.Errorf("hostlist %q: Go error %v, page error %q", expr, werr, got.Error)
			continue
		}
		if werr == nil && strings.Join(got.Names, ",") != strings.Join(want, ",") {
			t.Errorf("hostlist %q: page %v, Go %v", expr, got.Names, want)
		}
	}
}
