package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
	"gpucloud/internal/sched"
	"gpucloud/internal/serving"
	"gpucloud/internal/store"
	"gpucloud/internal/topology"
)

const chatYAML = `apiVersion: gpucloud/v1
kind: Deployment
metadata: {name: chat}
spec:
  queue: serving
  gpusPerReplica: 1
  command: ["python3", "-m", "http.server", "$PORT"]
  replicas: {min: 1, max: 8}
  readiness: {path: /health}
  autoscale: {targetInflight: 4}
  priority: high
`

func putServingQueue(t *testing.T, ts *testServer, quota int) {
	t.Helper()
	if _, err := ts.admin.PutQueue(context.Background(), &api.Queue{Metadata: api.ObjectMeta{Name: "serving"}, Spec: api.QueueSpec{Quota: quota}}); err != nil {
		t.Fatal(err)
	}
}

func apiCode(err error) int {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

func TestDeploymentAPI(t *testing.T) {
	ts := startServer(t, nil)
	putServingQueue(t, ts, 4)
	ctx := context.Background()
	alice, bob := ts.tenant(t, "alice"), ts.tenant(t, "bob")

	// Validation names the field; nothing is stored.
	bad := strings.Replace(chatYAML, "min: 1", "min: -1", 1)
	err := alice.Do(ctx, "POST", "/v1/deployments", []byte(bad), nil)
	if apiCode(err) != 400 || !strings.Contains(err.Error(), "spec.replicas.min") {
		t.Fatalf("bad deployment: %v", err)
	}
	err = alice.Do(ctx, "POST", "/v1/deployments", []byte(strings.Replace(chatYAML, "queue: serving", "queue: nope", 1)), nil)
	if apiCode(err) != 400 || !strings.Contains(err.Error(), "spec.queue") {
		t.Fatalf("unknown queue: %v", err)
	}

	var d api.Deployment
	if err := alice.Do(ctx, "POST", "/v1/deployments", []byte(chatYAML), &d); err != nil {
		t.Fatal(err)
	}
	if d.Metadata.Tenant != "alice" || d.Spec.Priority != 1000 || d.Metadata.ResourceVersion == 0 {
		t.Fatalf("created: %+v", d.Metadata)
	}
	// Names are global: the router's path.
	if err := bob.Do(ctx, "POST", "/v1/deployments", []byte(chatYAML), nil); apiCode(err) != 409 {
		t.Fatalf("second deployment of the same name: want 409, got %v", err)
	}
	// Tenant isolation: bob neither sees nor changes alice's deployment.
	if err := bob.Do(ctx, "GET", "/v1/deployments/chat", nil, nil); apiCode(err) != 404 {
		t.Fatalf("bob GET: want 404, got %v", err)
	}
	if err := bob.Do(ctx, "DELETE", "/v1/deployments/chat", nil, nil); apiCode(err) != 404 {
		t.Fatalf("bob DELETE: want 404, got %v", err)
	}
	if err := bob.Do(ctx, "PUT", "/v1/deployments/chat", []byte(chatYAML), nil); apiCode(err) != 409 {
		t.Fatalf("bob PUT: want 409, got %v", err)
	}
	var bl api.List[api.Deployment]
	if err := bob.Do(ctx, "GET", "/v1/deployments", nil, &bl); err != nil || len(bl.Items) != 0 {
		t.Fatalf("bob's list: %v %+v", err, bl.Items)
	}
	req, _ := http.NewRequest("GET", ts.url+"/v1/deployments/chat/health", nil)
	req.Header.Set("Authorization", "Bearer "+bobToken(t, ts, "bob2"))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 404 {
		t.Fatalf("bob's traffic to alice's deployment: want 404, got %v %v", resp, err)
	}
	if code, _ := raw(t, "GET", ts.url+"/v1/deployments/chat/health", "", "", nil); code != 401 {
		t.Fatalf("traffic without a token: want 401, got %d", code)
	}

	// The leader runs it: a replica job of one gang, high priority, on
	// the serving queue, with PORT in env and command.
	var jobs []api.Job
	waitFor(t, 10*time.Second, "a replica job", func() bool {
		var l api.List[api.Job]
		if err := alice.Do(ctx, "GET", "/v1/jobs", nil, &l); err != nil {
			return false
		}
		jobs = l.Items
		return len(jobs) == 1
	})
	j := jobs[0]
	port := j.Spec.Env["PORT"]
	if j.Metadata.Labels[serving.LabelDeployment] != "chat" || j.Spec.Queue != "serving" || j.Spec.Priority != 1000 ||
		j.Spec.Replicas != 1 || j.Spec.GPUsPerReplica != 1 || port == "" || j.Spec.Command[3] != port || j.Spec.RestartPolicy.MaxRestarts != 0 {
		t.Fatalf("replica job: %+v", j)
	}
	var got api.Deployment
	waitFor(t, 10*time.Second, "status", func() bool {
		return alice.Do(ctx, "GET", "/v1/deployments/chat", nil, &got) == nil && got.Status.Desired == 1 && got.Status.Revision != ""
	})

	// A spec change is a new revision; a same-spec PUT writes nothing.
	upd := strings.Replace(chatYAML, "priority: high", "priority: high\n  env: {MODEL: b}", 1)
	var u api.Deployment
	if err := alice.Do(ctx, "PUT", "/v1/deployments/chat", []byte(upd), &u); err != nil {
		t.Fatal(err)
	}
	var u2 api.Deployment
	if err := alice.Do(ctx, "PUT", "/v1/deployments/chat", []byte(upd), &u2); err != nil {
		t.Fatal(err)
	}
	if u2.Metadata.ResourceVersion > u.Metadata.ResourceVersion+20 || u.Spec.Env["MODEL"] != "b" {
		t.Fatalf("update: %+v", u.Spec)
	}
	waitFor(t, 10*time.Second, "a replica of the new revision", func() bool {
		var l api.List[api.Job]
		alice.Do(ctx, "GET", "/v1/jobs", nil, &l)
		for _, j := range l.Items {
			if j.Spec.Env["MODEL"] == "b" {
				return true
			}
		}
		return false
	})

	// Delete: the replicas go (not ready ones at once), their jobs too.
	if err := alice.Do(ctx, "DELETE", "/v1/deployments/chat", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the replica jobs to go", func() bool {
		var l api.List[api.Job]
		return alice.Do(ctx, "GET", "/v1/jobs", nil, &l) == nil && len(l.Items) == 0
	})
	if err := alice.Do(ctx, "GET", "/v1/deployments/chat", nil, nil); apiCode(err) != 404 {
		t.Fatalf("GET after delete: %v", err)
	}
	// The name is free again, for anyone.
	if err := bob.Do(ctx, "POST", "/v1/deployments", []byte(chatYAML), nil); err != nil {
		t.Fatal(err)
	}
	// The routes are in the OpenAPI document.
	_, doc := raw(t, "GET", ts.url+"/v1/openapi.json", "", "", nil)
	if !strings.Contains(string(doc), `"/v1/deployments/{name}"`) {
		t.Error("OpenAPI lacks /v1/deployments/{name}")
	}
}

func bobToken(t *testing.T, ts *testServer, name string) string {
	t.Helper()
	tok, err := ts.admin.CreateToken(context.Background(), api.TokenRequest{Name: name, Role: api.RoleTenant, Tenant: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

// A follower does not route: it forwards traffic to the leader, whose
// answer comes back; a request forwarded once already gets 503 with
// Retry-After instead of going round.
func TestDeploymentTrafficOnFollower(t *testing.T) {
	ts := startServer(t, nil)
	putServingQueue(t, ts, 4)
	if err := ts.admin.Do(context.Background(), "POST", "/v1/deployments", []byte(chatYAML), nil); err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{Listen: "127.0.0.1:0", Store: ts.Store(), Logger: quietLogger(), CycleInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-f.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	if f.IsLeader() {
		t.Fatal("the second replica leads")
	}
	post := func(base string, forwarded bool) (int, string) {
		req, _ := http.NewRequest("POST", base+"/v1/deployments/chat/v1/completions", strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer "+ts.token)
		if forwarded {
			req.Header.Set(forwardedBy, "another-replica")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// No agent runs the deployment's replica here: the leader's own answer
	// (not the follower's) is what comes back through the follower.
	leaderCode, leaderBody := post(ts.url, false)
	var code int
	var body string
	waitFor(t, 10*time.Second, "the follower to forward to the leader", func() bool {
		code, body = post("http://"+f.Addr(), false)
		return code == leaderCode && !strings.Contains(body, "cannot reach")
	})
	if strings.Contains(body, "this replica cannot reach") {
		t.Fatalf("follower answered itself: %d %s (leader: %d %s)", code, body, leaderCode, leaderBody)
	}
	code, body = post("http://"+f.Addr(), true)
	if code != 503 || !strings.Contains(body, "cannot reach") {
		t.Fatalf("a request forwarded already: want the follower's 503, got %d %s", code, body)
	}
	// The follower serves the API, status included (written by the leader).
	fc := client.New([]string{"http://" + f.Addr()}, ts.token, client.Options{})
	var d api.Deployment
	waitFor(t, 10*time.Second, "status through the follower", func() bool {
		return fc.Do(context.Background(), "GET", "/v1/deployments/chat", nil, &d) == nil && d.Status.Desired == 1
	})
}

// Replicas of a high-priority deployment take back the serving queue's
// GPUs from preemptible training that borrowed them; training gets them
// again when the deployment goes.
func TestDeploymentReclaimsTrainingGPUs(t *testing.T) {
	// Victims must have run MinRuntime (5 minutes by default).
	old := newCore
	newCore = func(f *topology.Fabric) (core, error) {
		cfg := sched.DefaultConfig()
		cfg.MinRuntime = 0
		return sched.New(f, cfg), nil
	}
	t.Cleanup(func() { newCore = old })
	ts := startServer(t, nil)
	ctx := context.Background()
	putServingQueue(t, ts, 4) // the node's 4 GPUs are the serving queue's
	startFakeAgent(t, ts.admin, "node-a", 4, hold)
	user := ts.tenant(t, "ml")

	train := testJob("train", 1, 4)
	train.Spec.Preemptible = true
	var tj api.Job
	if err := user.Do(ctx, "POST", "/v1/jobs", train, &tj); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, user, tj.Metadata.ID, api.PhaseRunning, 10*time.Second)

	dep := strings.Replace(chatYAML, "{min: 1, max: 8}", "{min: 2, max: 8}", 1)
	if err := user.Do(ctx, "POST", "/v1/deployments", []byte(dep), nil); err != nil {
		t.Fatal(err)
	}
	running := func() (replicas int, training bool) {
		var l api.List[api.Job]
		if err := user.Do(ctx, "GET", "/v1/jobs", nil, &l); err != nil {
			return 0, false
		}
		for _, j := range l.Items {
			if j.Status.Phase != api.PhaseRunning {
				continue
			}
			if j.Metadata.Labels[serving.LabelDeployment] == "chat" {
				replicas++
			} else if j.Metadata.ID == tj.Metadata.ID {
				training = true
			}
		}
		return
	}
	defer func() {
		if t.Failed() {
			var l api.List[api.Job]
			user.Do(ctx, "GET", "/v1/jobs", nil, &l)
			for _, j := range l.Items {
				t.Logf("job %s %s prio %d queue %s: %s", j.Metadata.ID, j.Status.Phase, j.Spec.Priority, j.Spec.Queue, j.Status.Reason)
			}
		}
	}()
	waitFor(t, 15*time.Second, "two replicas placed and the training job preempted", func() bool {
		r, tr := running()
		return r == 2 && !tr
	})
	j, err := user.Job(ctx, tj.Metadata.ID)
	if err != nil || j.Status.Requeues == 0 {
		t.Fatalf("training job after reclaim: %v %+v", err, j.Status)
	}
	if err := user.Do(ctx, "DELETE", "/v1/deployments/chat", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the training job running again", func() bool {
		r, tr := running()
		return r == 0 && tr
	})
}

// A stored spec the controller refuses (written past the API's checks)
// shows in the status instead of silently doing nothing.
func TestDeploymentRefusedSpecShowsInStatus(t *testing.T) {
	ts := startServer(t, nil)
	d := api.Deployment{APIVersion: api.Version, Kind: api.KindDeployment, Metadata: api.ObjectMeta{Name: "broken", Tenant: "default"},
		Spec: api.DeploymentSpec{Queue: "default", GPUsPerReplica: 1, Replicas: api.ReplicaBounds{Min: 1, Max: 1}}}
	if _, err := ts.Store().Put(context.Background(), store.DeploymentsKey+"broken", mustJSON(&d)); err != nil {
		t.Fatal(err)
	}
	var got api.Deployment
	waitFor(t, 10*time.Second, "the refusal in the status", func() bool {
		return ts.admin.Do(context.Background(), "GET", "/v1/deployments/broken", nil, &got) == nil &&
			strings.Contains(got.Status.Message, "refused") && strings.Contains(got.Status.Message, "command")
	})
}
