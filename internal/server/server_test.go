package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
	"gpucloud/internal/client/apibench"
	"gpucloud/internal/store"
	"gpucloud/internal/testnet"
)

func raw(t *testing.T, method, url, token, ctype string, body []byte) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

const helloYAML = `apiVersion: gpucloud/v1
kind: Job
metadata: {name: hello}
spec:
  queue: default
  replicas: 2
  gpusPerReplica: 1
  launch: per-node
  command: ["sh", "-c", "echo rank=$RANK world=$WORLD_SIZE"]
  env: {KEY: value}
  restartPolicy: {maxRestarts: 2}
  topology: {required: leaf}
`

func TestAdminTokenAndBootstrap(t *testing.T) {
	ts := startServer(t, nil)
	fi, err := os.Stat(filepath.Join(ts.dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("admin.token mode %v, want 0600", fi.Mode().Perm())
	}
	who, err := ts.admin.Whoami(context.Background())
	if err != nil || who["role"] != "admin" {
		t.Fatalf("whoami: %v %v", who, err)
	}
	qs, err := ts.admin.Queues(context.Background())
	if err != nil || len(qs) != 1 || qs[0].Metadata.Name != "default" {
		t.Fatalf("default queue: %+v %v", qs, err)
	}
	code, _ := raw(t, "GET", ts.url+"/v1/jobs", "", "", nil)
	if code != 401 {
		t.Errorf("no token: %d, want 401", code)
	}
	code, b := raw(t, "GET", ts.url+"/v1/jobs", "gct_wrong", "", nil)
	if code != 401 || !json.Valid(b) {
		t.Errorf("bad token: %d %s", code, b)
	}
}

func TestBadInputIsRejectedAndNothingWritten(t *testing.T) {
	ts := startServer(t, nil)
	for _, tc := range []struct {
		name, body string
		code       int
		want       string
	}{
		{"zero replicas", strings.Replace(helloYAML, "replicas: 2", "replicas: 0", 1), 400, "spec.replicas: must be at least 1"},
		{"unknown field", strings.Replace(helloYAML, "replicas: 2", "replicas: 2\n  replica: 3", 1), 400, "spec.replica: unknown field"},
		{"unknown json field", `{"apiVersion":"gpucloud/v1","kind":"Job","metadata":{"name":"a"},"spec":{"replicas":1,"gpusPerReplica":1,"command":["x"]},"extra":1}`, 400, "extra: unknown field"},
		{"no such queue", strings.Replace(helloYAML, "queue: default", "queue: nope", 1), 400, "spec.queue: no queue nope"},
		{"status given", helloYAML + "status: {phase: Running}\n", 400, "status: is set by the server"},
		{"not yaml", "{{{", 400, "invalid"},
		{"oversized", helloYAML + "# " + strings.Repeat("x", 2<<20) + "\n", 413, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, b := raw(t, "POST", ts.url+"/v1/jobs", ts.token, "application/yaml", []byte(tc.body))
			var e api.ErrorResponse
			if code != tc.code || json.Unmarshal(b, &e) != nil || !strings.Contains(e.Error, tc.want) {
				t.Fatalf("got %d %s, want %d with %q", code, b, tc.code, tc.want)
			}
		})
	}
	// Field errors come back structured too.
	code, b := raw(t, "POST", ts.url+"/v1/jobs", ts.token, "", []byte(strings.Replace(helloYAML, "replicas: 2", "replicas: 0", 1)))
	var e api.ErrorResponse
	json.Unmarshal(b, &e)
	if code != 400 || len(e.Fields) != 1 || e.Fields[0].Field != "spec.replicas" {
		t.Fatalf("fields: %d %s", code, b)
	}
	// Other resources validate the same way.
	code, b = raw(t, "PUT", ts.url+"/v1/queues/q1", ts.token, "", []byte(`{"spec":{"quota":-1,"weight":1}}`))
	if code != 400 || !strings.Contains(string(b), "spec.quota") {
		t.Fatalf("queue: %d %s", code, b)
	}
	code, b = raw(t, "POST", ts.url+"/v1/tenants", ts.token, "", []byte(`{"metadata":{"name":"Bad Name"}}`))
	if code != 400 || !strings.Contains(string(b), "metadata.name") {
		t.Fatalf("tenant: %d %s", code, b)
	}
	code, b = raw(t, "POST", ts.url+"/v1/tokens", ts.token, "", []byte(`{"role":"tenant","tenant":"ghost"}`))
	if code != 400 || !strings.Contains(string(b), "no tenant ghost") {
		t.Fatalf("token for a missing tenant: %d %s", code, b)
	}
	code, b = raw(t, "GET", ts.url+"/v1/nothing", ts.token, "", nil)
	if code != 404 || !json.Valid(b) {
		t.Fatalf("unknown route: %d %s", code, b)
	}
	jobs, err := ts.admin.Jobs(context.Background(), client.JobFilter{})
	if err != nil || len(jobs.Items) != 0 {
		t.Fatalf("something was written: %+v %v", jobs, err)
	}
	qs, _ := ts.admin.Queues(context.Background())
	if len(qs) != 1 {
		t.Fatalf("queues: %+v", qs)
	}
	// And a good one goes through, with the submitter's tenant.
	code, b = raw(t, "POST", ts.url+"/v1/jobs", ts.token, "application/yaml", []byte(helloYAML))
	var j api.Job
	if code != 201 || json.Unmarshal(b, &j) != nil || j.Status.Phase != api.PhasePending || j.Metadata.Tenant != "default" || j.Metadata.ID == "" {
		t.Fatalf("good job: %d %s", code, b)
	}
}

func TestTenantIsolation(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	a := ts.tenant(t, "team-a")
	b := ts.tenant(t, "team-b")
	ja, err := a.Submit(ctx, testJob("secret", 1, 1))
	if err != nil {
		t.Fatal(err)
	}
	if ja.Metadata.Tenant != "team-a" {
		t.Fatalf("tenant %q", ja.Metadata.Tenant)
	}
	id := ja.Metadata.ID
	// Every route that names a job answers 404 to another tenant, as if
	// the job did not exist.
	for _, rt := range []struct{ method, path string }{
		{"GET", "/v1/jobs/" + id}, {"POST", "/v1/jobs/" + id + "/cancel"}, {"DELETE", "/v1/jobs/" + id},
		{"GET", "/v1/jobs/" + id + "/logs"}, {"GET", "/v1/jobs/" + id + "/events"},
	} {
		err := b.Do(ctx, rt.method, rt.path, nil, nil)
		if !client.IsCode(err, 404) {
			t.Errorf("%s %s by another tenant: %v, want 404", rt.method, rt.path, err)
		}
	}
	if jb, err := b.Jobs(ctx, client.JobFilter{}); err != nil || len(jb.Items) != 0 {
		t.Errorf("tenant b lists %d jobs (%v)", len(jb.Items), err)
	}
	if _, err := b.Jobs(ctx, client.JobFilter{Tenant: "team-a"}); !client.IsCode(err, 403) {
		t.Errorf("tenant b lists team-a: %v, want 403", err)
	}
	if evs, err := b.Events(ctx, "", ""); err != nil {
		t.Error(err)
	} else {
		for _, e := range evs {
			if e.Tenant != "team-b" {
				t.Errorf("tenant b sees %+v", e)
			}
		}
	}
	if ts, err := b.Tenants(ctx); err != nil || len(ts) != 1 || ts[0].Metadata.Name != "team-b" {
		t.Errorf("tenant b sees tenants %+v", ts)
	}
	// Submitting into another tenant is refused.
	other := testJob("x", 1, 1)
	other.Metadata.Tenant = "team-a"
	if _, err := b.Submit(ctx, other); !client.IsCode(err, 403) {
		t.Errorf("submit into team-a by team-b: %v", err)
	}
	// The owner sees and cancels it.
	if l, err := a.Jobs(ctx, client.JobFilter{}); err != nil || len(l.Items) != 1 {
		t.Fatalf("owner list: %+v %v", l, err)
	}
	if evs, err := a.JobEvents(ctx, id); err != nil || len(evs) == 0 {
		t.Errorf("owner events: %v %v", evs, err)
	}
	// Watches are filtered too.
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	seen := 0
	b.WatchJobs(wctx, func(ev api.WatchEvent[api.Job]) error { seen++; return nil })
	if seen != 0 {
		t.Errorf("tenant b's watch saw %d jobs", seen)
	}
	if _, err := a.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	// Tenants may not administer, nor act as agents.
	for _, rt := range []struct{ method, path, body string }{
		{"POST", "/v1/tenants", `{"metadata":{"name":"c"}}`}, {"POST", "/v1/tokens", `{"role":"admin"}`},
		{"PUT", "/v1/queues/q", `{"spec":{"quota":1}}`}, {"POST", "/v1/nodes/register", `{}`},
		{"POST", "/v1/nodes/n1/heartbeat", `{}`}, {"POST", "/v1/nodes/n1/cordon", ``}, {"GET", "/v1/tokens", ``},
	} {
		var body any
		if rt.body != "" {
			body = []byte(rt.body)
		}
		if err := b.Do(ctx, rt.method, rt.path, body, nil); !client.IsCode(err, 403) {
			t.Errorf("%s %s by a tenant: %v, want 403", rt.method, rt.path, err)
		}
	}
	// Agents may not read jobs, nor drain; they may cordon (self-fencing).
	at, _ := ts.admin.CreateToken(ctx, api.TokenRequest{Role: api.RoleAgent})
	ag := ts.client(at.Token)
	if _, err := ag.Jobs(ctx, client.JobFilter{}); !client.IsCode(err, 403) {
		t.Errorf("agent lists jobs: %v", err)
	}
	if _, err := ag.Register(ctx, registration("n1", 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := ag.NodeAction(ctx, "n1", "drain", ""); !client.IsCode(err, 403) {
		t.Errorf("agent drains: %v", err)
	}
	if n, err := ag.NodeAction(ctx, "n1", "cordon", "health: xid 79"); err != nil || !n.Spec.Cordoned {
		t.Errorf("agent cordons its node: %v %v", n, err)
	}
}

func TestJobLifecycle(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	at, _ := ts.admin.CreateToken(ctx, api.TokenRequest{Role: api.RoleAgent, Name: "agents"})
	agentClient := ts.client(at.Token)
	failRank := -1
	exit := func(a api.Assignment, p api.Process) (int, bool) {
		if a.Name == "flaky" && p.Rank == failRank {
			return 3, false
		}
		return 0, false
	}
	startFakeAgent(t, agentClient, "node-a", 2, exit)
	startFakeAgent(t, agentClient, "node-b", 2, exit)
	waitFor(t, 10*time.Second, "nodes ready", func() bool {
		ns, _ := ts.admin.Nodes(ctx)
		return len(ns) == 2 && ns[0].Status.Phase == api.NodeReady && ns[1].Status.Phase == api.NodeReady
	})

	j, err := ts.admin.SubmitDocument(ctx, []byte(helloYAML))
	if err != nil {
		t.Fatal(err)
	}
	done := waitPhase(t, ts.admin, j.Metadata.ID, api.PhaseSucceeded, 20*time.Second)
	p := done.Status.Placement
	if p == nil || p.GPUs != 2 || p.Leaves != 1 || p.LeafNames != LocalLeaf || done.Status.Generation != 1 {
		t.Fatalf("placement %+v gen %d", p, done.Status.Generation)
	}
	logs, err := ts.admin.Logs(ctx, j.Metadata.ID, -1, false)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(logs)
	logs.Close()
	if !strings.Contains(string(out), "[rank 0] rank=0 world=2") || !strings.Contains(string(out), "[rank 1] rank=1 world=2") {
		t.Fatalf("logs:\n%s", out)
	}

	// A rank that fails is restarted while restarts remain, then the job
	// fails with its exit code.
	failRank = 1
	flaky := testJob("flaky", 2, 1)
	flaky.Spec.RestartPolicy.MaxRestarts = 1
	fj, err := ts.admin.Submit(ctx, flaky)
	if err != nil {
		t.Fatal(err)
	}
	failed := waitPhase(t, ts.admin, fj.Metadata.ID, api.PhaseFailed, 20*time.Second)
	if failed.Status.Restarts != 1 || failed.Status.Generation != 2 || failed.Status.ExitCode != 3 || !strings.Contains(failed.Status.Reason, "rank 1 exited with code 3") {
		t.Fatalf("failed job status: %+v", failed.Status)
	}
	evs, _ := ts.admin.JobEvents(ctx, fj.Metadata.ID)
	var reasons []string
	for _, e := range evs {
		reasons = append(reasons, e.Reason)
	}
	if got := strings.Join(reasons, ","); got != "Submitted,Scheduled,Restarted,Failed" {
		t.Errorf("events: %s", got)
	}

	// A job that holds its GPUs blocks a second one until cancelled.
	failRank = -1
	big := testJob("big", 2, 2)
	bj, _ := ts.admin.Submit(ctx, big)
	_ = bj
	waitPhase(t, ts.admin, bj.Metadata.ID, api.PhaseSucceeded, 20*time.Second)

	// Metrics and OpenAPI.
	code, m := raw(t, "GET", ts.url+"/metrics", "", "", nil)
	for _, want := range []string{`gpucloud_jobs{phase="Succeeded"} 2`, `gpucloud_jobs{phase="Failed"} 1`, "gpucloud_job_queueing_delay_seconds_count",
		`gpucloud_gpus{state="free"} 4`, "gpucloud_scheduling_cycle_seconds", `gpucloud_api_request_duration_seconds_count{code="201",route="POST /v1/jobs"}`, "gpucloud_leader 1"} {
		if code != 200 || !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	code, doc := raw(t, "GET", ts.url+"/v1/openapi.json", "", "", nil)
	var oa map[string]any
	if code != 200 || json.Unmarshal(doc, &oa) != nil || oa["openapi"] != "3.0.3" || !strings.Contains(string(doc), `"/v1/jobs/{id}/cancel"`) {
		t.Fatalf("openapi: %d", code)
	}
}

func TestNodeLeaseExpiryRequeues(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.NodeLeaseTTL = 2 * time.Second })
	ctx := context.Background()
	a1 := startFakeAgent(t, ts.admin, "n1", 1, hold)
	j, _ := ts.admin.Submit(ctx, testJob("long", 1, 1))
	waitPhase(t, ts.admin, j.Metadata.ID, api.PhaseRunning, 10*time.Second)
	a1.stop() // the agent dies: no more heartbeats
	back := waitPhase(t, ts.admin, j.Metadata.ID, api.PhasePending, 15*time.Second)
	if back.Status.Requeues != 1 || !strings.Contains(back.Status.Reason, "") {
		t.Fatalf("requeued status: %+v", back.Status)
	}
	n, _ := ts.admin.Node(ctx, "n1")
	if n.Status.Phase != api.NodeDown {
		t.Fatalf("node phase %s", n.Status.Phase)
	}
	startFakeAgent(t, ts.admin, "n2", 1, hold)
	again := waitPhase(t, ts.admin, j.Metadata.ID, api.PhaseRunning, 15*time.Second)
	if again.Status.Generation != 2 || again.Status.Placement.Groups[0].Hosts != "n2" {
		t.Fatalf("rescheduled: %+v", again.Status)
	}
}

func TestCordonAndDrain(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	startFakeAgent(t, ts.admin, "n1", 1, hold)
	startFakeAgent(t, ts.admin, "n2", 1, hold)
	if code, b := raw(t, "POST", ts.url+"/v1/nodes/n1/heartbeat", ts.token, "", nil); code != 200 {
		t.Fatalf("empty heartbeat: %d %s", code, b)
	}
	if code, _ := raw(t, "POST", ts.url+"/v1/nodes/ghost/heartbeat", ts.token, "", nil); code != 410 {
		t.Fatalf("heartbeat of an unregistered node: %d, want 410", code)
	}
	j, _ := ts.admin.Submit(ctx, testJob("a", 1, 1))
	run := waitPhase(t, ts.admin, j.Metadata.ID, api.PhaseRunning, 10*time.Second)
	node := run.Status.Placement.Groups[0].Hosts
	other := map[string]string{"n1": "n2", "n2": "n1"}[node]
	if _, err := ts.admin.NodeAction(ctx, node, "cordon", "maintenance"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if still, _ := ts.admin.Job(ctx, j.Metadata.ID); still.Status.Phase != api.PhaseRunning || still.Status.Generation != 1 {
		t.Fatalf("cordon disturbed the running job: %+v", still.Status)
	}
	if _, err := ts.admin.NodeAction(ctx, node, "drain", "maintenance"); err != nil {
		t.Fatal(err)
	}
	var moved *api.Job
	waitFor(t, 10*time.Second, "the job to move off the drained node", func() bool {
		moved, _ = ts.admin.Job(ctx, j.Metadata.ID)
		return moved.Status.Phase == api.PhaseRunning && moved.Status.Generation == 2
	})
	if moved.Status.Placement.Groups[0].Hosts != other || moved.Status.Requeues != 1 {
		t.Fatalf("after drain: %+v", moved.Status)
	}
	n, _ := ts.admin.Node(ctx, node)
	if !n.Spec.Draining || !n.Spec.Cordoned || n.Status.Reason != "maintenance" {
		t.Fatalf("node spec %+v status %+v", n.Spec, n.Status)
	}
	// The drained node takes no work until uncordoned.
	j2, _ := ts.admin.Submit(ctx, testJob("b", 1, 1))
	time.Sleep(500 * time.Millisecond)
	if p, _ := ts.admin.Job(ctx, j2.Metadata.ID); p.Status.Phase != api.PhasePending {
		t.Fatalf("job placed on a drained node: %+v", p.Status)
	}
	ts.admin.NodeAction(ctx, node, "uncordon", "")
	waitPhase(t, ts.admin, j2.Metadata.ID, api.PhaseRunning, 10*time.Second)
}

func TestBenchAPI(t *testing.T) {
	ts := startServer(t, nil)
	r, err := apibench.Run(context.Background(), apibench.Options{Servers: []string{ts.url}, Token: ts.token,
		Jobs: 200, Concurrency: 8, Agents: 50, AgentGPUs: 8, Interval: 200 * time.Millisecond, Duration: 1500 * time.Millisecond, Cleanup: true})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(r)
	var m map[string]any
	json.Unmarshal(b, &m)
	for _, k := range []string{"submissions_per_s", "submit_p99_ms", "heartbeats_per_s", "api_p99_ms"} {
		if v, ok := m[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v", k, m[k])
		}
	}
	if r.SubmitErrors+r.HeartbeatErrors+r.APIErrors+r.CleanupErrors != 0 {
		t.Errorf("errors: %s", b)
	}
	l, _ := ts.admin.Jobs(context.Background(), client.JobFilter{})
	ns, _ := ts.admin.Nodes(context.Background())
	if len(l.Items) != 0 || len(ns) != 0 {
		t.Errorf("cleanup left %d jobs and %d nodes", len(l.Items), len(ns))
	}
}

// TestTakeoverRequeuesGangsOfDeadNodes: a node dies while no leader runs;
// the next leader's resync finds its gang Running in etcd and requeues it
// onto a live node.
func TestTakeoverRequeuesGangsOfDeadNodes(t *testing.T) {
	ctx := context.Background()
	e, err := store.StartMember(ctx, store.MemberConfig{Dir: t.TempDir(), NoFsync: true,
		ClientURL: fmt.Sprintf("http://127.0.0.1:%d", testnet.FreePort(t)), PeerURL: fmt.Sprintf("http://127.0.0.1:%d", testnet.FreePort(t))})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	st, err := store.Open(ctx, e.Endpoints, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	shared := func(c *Config) { c.Store = st; c.NodeLeaseTTL = 2 * time.Second }

	ts1 := startServer(t, shared)
	a1 := startFakeAgent(t, ts1.admin, "n1", 1, hold)
	j, _ := ts1.admin.Submit(ctx, testJob("g", 1, 1))
	waitPhase(t, ts1.admin, j.Metadata.ID, api.PhaseRunning, 10*time.Second)
	ts1.stop()
	a1.stop()
	time.Sleep(3 * time.Second) // n1's lease expires with no leader watching

	ts2 := startServer(t, func(c *Config) { shared(c); c.DataDir = ts1.dir })
	ts2.admin = ts2.client(ts1.token)
	startFakeAgent(t, ts2.admin, "n2", 1, hold)
	moved := waitPhase(t, ts2.admin, j.Metadata.ID, api.PhaseRunning, 15*time.Second)
	for moved.Status.Generation < 2 {
		time.Sleep(50 * time.Millisecond)
		moved, _ = ts2.admin.Job(ctx, j.Metadata.ID)
	}
	if moved.Status.Placement.Groups[0].Hosts != "n2" || moved.Status.Requeues != 1 {
		t.Fatalf("after takeover: %+v", moved.Status)
	}
	evs, _ := ts2.admin.JobEvents(ctx, j.Metadata.ID)
	found := false
	for _, ev := range evs {
		found = found || (ev.Reason == "Requeued" && strings.Contains(ev.Message, "node n1 is down (lease expired)"))
	}
	if !found {
		t.Fatalf("no requeue event naming n1: %+v", evs)
	}
}

func TestFinishedJobsExpire(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.JobRetention = 500 * time.Millisecond; c.GCInterval = 200 * time.Millisecond })
	ctx := context.Background()
	startFakeAgent(t, ts.admin, "n1", 1, func(a api.Assignment, p api.Process) (int, bool) { return 0, a.Name == "stays" })
	j, _ := ts.admin.Submit(ctx, testJob("short", 1, 1))
	waitPhase(t, ts.admin, j.Metadata.ID, api.PhaseSucceeded, 10*time.Second)
	live, _ := ts.admin.Submit(ctx, testJob("stays", 1, 1)) // runs until the end
	waitFor(t, 10*time.Second, "the finished job to expire", func() bool {
		_, err := ts.admin.Job(ctx, j.Metadata.ID)
		return client.IsCode(err, 404)
	})
	logs, _, err := ts.Store().List(ctx, store.LogsKey+j.Metadata.ID+"/")
	if err != nil || len(logs) != 0 {
		t.Fatalf("logs left: %d %v", len(logs), err)
	}
	waitPhase(t, ts.admin, live.Metadata.ID, api.PhaseRunning, 10*time.Second)
	time.Sleep(time.Second) // several collections later
	if p, err := ts.admin.Job(ctx, live.Metadata.ID); err != nil || p.Status.Phase != api.PhaseRunning {
		t.Fatalf("a live job was collected: %v %v", p, err)
	}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	ts := startServer(t, func(c *Config) { c.TLSCert, c.TLSKey = certFile, keyFile })
	c := client.New([]string{"https://" + ts.Addr()}, ts.token, client.Options{InsecureSkipVerify: true})
	c.Retry = time.Second
	if who, err := c.Whoami(context.Background()); err != nil || who["role"] != "admin" {
		t.Fatalf("over TLS: %v %v", who, err)
	}
	plain := client.New([]string{"http://" + ts.Addr()}, ts.token, client.Options{})
	plain.Retry = 0
	if _, err := plain.Whoami(context.Background()); err == nil {
		t.Fatal("plain HTTP answered on a TLS port")
	}
}

func TestWatchAndFollowLogs(t *testing.T) {
	ts := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	release := make(chan struct{})
	startFakeAgent(t, ts.admin, "n1", 1, func(api.Assignment, api.Process) (int, bool) {
		<-release
		return 0, false
	})
	phases := make(chan api.Phase, 16)
	go ts.admin.WatchJobs(ctx, func(ev api.WatchEvent[api.Job]) error {
		phases <- ev.Object.Status.Phase
		return nil
	})
	j, _ := ts.admin.Submit(ctx, testJob("w", 1, 1))
	waitPhase(t, ts.admin, j.Metadata.ID, api.PhaseRunning, 10*time.Second)
	logs, err := ts.admin.Logs(ctx, j.Metadata.ID, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	// The first line is there already; a new chunk arrives on the stream.
	ts.admin.UploadLog(ctx, "n1", &api.LogChunk{Job: j.Metadata.ID, Generation: 1, Rank: 0, Offset: 1 << 20, Data: []byte("later\n")})
	buf := make([]byte, 0, 256)
	for !strings.Contains(string(buf), "later") {
		b := make([]byte, 256)
		n, err := logs.Read(b)
		if err != nil {
			t.Fatalf("follow: %v after %q", err, buf)
		}
		buf = append(buf, b[:n]...)
	}
	if !strings.HasPrefix(string(buf), "rank=0 world=1") {
		t.Fatalf("followed logs %q", buf)
	}
	close(release)
	// The stream ends when the job does.
	io.ReadAll(logs)
	waitPhase(t, ts.admin, j.Metadata.ID, api.PhaseSucceeded, 10*time.Second)
	var seen []api.Phase
	for len(seen) == 0 || seen[len(seen)-1] != api.PhaseSucceeded {
		select {
		case p := <-phases:
			seen = append(seen, p)
		case <-ctx.Done():
			t.Fatalf("watch saw %v", seen)
		}
	}
	if seen[0] != api.PhasePending || !contains(phaseStrings(seen), "Running") {
		t.Fatalf("watch saw %v", seen)
	}
}

func phaseStrings(ps []api.Phase) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = string(p)
	}
	return out
}

// TestCordonedNodeTakesNoNewWork checks that a cordon is exact at once: the
// cordoned node keeps its running job, and its free GPUs take nothing new
// while it is busy.
func TestCordonedNodeTakesNoNewWork(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	startFakeAgent(t, ts.admin, "n1", 2, hold)
	startFakeAgent(t, ts.admin, "n2", 2, hold)
	a, _ := ts.admin.Submit(ctx, testJob("a", 1, 1))
	run := waitPhase(t, ts.admin, a.Metadata.ID, api.PhaseRunning, 10*time.Second)
	busy := run.Status.Placement.Groups[0].Hosts
	free := map[string]string{"n1": "n2", "n2": "n1"}[busy]
	if _, err := ts.admin.NodeAction(ctx, busy, "cordon", "maintenance"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	var ids []string
	for _, name := range []string{"b", "c", "d"} {
		j, err := ts.admin.Submit(ctx, testJob(name, 1, 1))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.Metadata.ID)
	}
	waitPhase(t, ts.admin, ids[0], api.PhaseRunning, 10*time.Second)
	waitPhase(t, ts.admin, ids[1], api.PhaseRunning, 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	for _, id := range ids[:2] {
		j, _ := ts.admin.Job(ctx, id)
		if h := j.Status.Placement.Groups[0].Hosts; h != free {
			t.Errorf("job %s placed on %s, the cordoned node is %s", j.Metadata.Name, h, busy)
		}
	}
	if d, _ := ts.admin.Job(ctx, ids[2]); d.Status.Phase != api.PhasePending {
		t.Errorf("third job %s on %+v: the cordoned node's free GPU took it", d.Status.Phase, d.Status.Placement)
	}
	if still, _ := ts.admin.Job(ctx, a.Metadata.ID); still.Status.Phase != api.PhaseRunning || still.Status.Generation != 1 {
		t.Errorf("cordon disturbed the running job: %+v", still.Status)
	}
}

// TestNodeBoundAgentToken: an agent token bound to a node registers,
// heartbeats and cordons that node, and is refused (403, naming both
// nodes) for any other; a fleet-wide agent token serves any node; only
// agent tokens take a node.
func TestNodeBoundAgentToken(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	bound, err := ts.admin.CreateToken(ctx, api.TokenRequest{Role: api.RoleAgent, Node: "n1"})
	if err != nil || bound.Node != "n1" {
		t.Fatalf("bound token: %+v %v", bound, err)
	}
	ag := ts.client(bound.Token)
	if _, err := ag.Register(ctx, registration("n1", 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := ag.NodeAction(ctx, "n1", "cordon", "health"); err != nil {
		t.Errorf("cordon of its own node: %v", err)
	}
	_, err = ag.Register(ctx, registration("n2", 1))
	if !client.IsCode(err, 403) || !strings.Contains(err.Error(), "bound to node n1, not n2") {
		t.Errorf("register as another node: %v", err)
	}
	if _, err := ag.NodeAction(ctx, "n2", "cordon", "x"); !client.IsCode(err, 403) {
		t.Errorf("cordon of another node: %v", err)
	}
	fleet, _ := ts.admin.CreateToken(ctx, api.TokenRequest{Role: api.RoleAgent})
	if _, err := ts.client(fleet.Token).Register(ctx, registration("n2", 1)); err != nil {
		t.Errorf("fleet-wide agent token: %v", err)
	}
	if _, err := ts.admin.CreateToken(ctx, api.TokenRequest{Role: api.RoleAdmin, Node: "n1"}); !client.IsCode(err, 400) {
		t.Errorf("admin token with a node: %v", err)
	}
}
