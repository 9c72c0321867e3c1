package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
	"gpucloud/internal/server/servertest"
	"gpucloud/internal/testnet"
)

// cli runs the binary's root command in-process and returns stdout and
// stderr apart.
func cli(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRoot()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetIn(strings.NewReader(""))
	root.SetArgs(args)
	err = root.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

// isolate keeps the test off the user's ~/.gpucloud and environment.
func isolate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv(envConfig, filepath.Join(dir, "config"))
	t.Setenv(envServer, "")
	t.Setenv(envToken, "")
	return dir
}

func TestConnPrecedence(t *testing.T) {
	dir := isolate(t)
	cfgPath := filepath.Join(dir, "config")
	if err := writeConfig(cfgPath, &cliConfig{Server: "http://10.0.0.1:8080", Token: "gct_fromconfig"}); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(cfgPath); st.Mode().Perm() != 0o600 {
		t.Errorf("config mode %v, want 0600 (it holds a token)", st.Mode().Perm())
	}
	tokFile := filepath.Join(dir, "tok")
	os.WriteFile(tokFile, []byte("gct_fromfile\n"), 0o600)
	tests := []struct {
		name                string
		c                   conn
		envServer, envToken string
		wantServer          string
		wantToken           string
		wantErr             string
	}{
		{name: "config alone", wantServer: "http://10.0.0.1:8080", wantToken: "gct_fromconfig"},
		{name: "env beats config", envServer: "10.0.0.2:9000", envToken: "gct_env", wantServer: "http://10.0.0.2:9000", wantToken: "gct_env"},
		{name: "flags beat env", c: conn{server: "https://a.example:443/", token: "gct_flag"}, envServer: "10.0.0.2:9000", envToken: "gct_env",
			wantServer: "https://a.example:443", wantToken: "gct_flag"},
		{name: "token file", c: conn{tokenFile: tokFile}, wantServer: "http://10.0.0.1:8080", wantToken: "gct_fromfile"},
		{name: "config token kept from another server", c: conn{server: "http://evil.example"},
			wantErr: "no token for http://evil.example"},
		{name: "config token with the same server", c: conn{server: "10.0.0.1:8080"}, wantServer: "http://10.0.0.1:8080", wantToken: "gct_fromconfig"},
		{name: "both token flags", c: conn{token: "a", tokenFile: tokFile}, wantErr: "exclude each other"},
		{name: "no config at all", c: conn{configFile: filepath.Join(dir, "missing")}, wantErr: "no server: run `gpucloud up`"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(envServer, tt.envServer)
			t.Setenv(envToken, tt.envToken)
			c := tt.c
			server, token, err := c.resolve()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if server != tt.wantServer || token != tt.wantToken {
				t.Errorf("got %s %s, want %s %s", server, token, tt.wantServer, tt.wantToken)
			}
		})
	}
}

func TestLoadConfigErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config")
	os.WriteFile(p, []byte("server: x\nsrever: y\n"), 0o600)
	_, err := loadConfig(p)
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "srever") {
		t.Fatalf("err = %v, want the file and the unknown key", err)
	}
}

func TestReadJobFile(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "work"), 0o755)
	path := filepath.Join(dir, "jobs.yaml")
	os.WriteFile(path, []byte(`apiVersion: gpucloud/v1
kind: Job
metadata: {name: a}
spec: {replicas: 1, gpusPerReplica: 1, command: ['true'], workingDir: work}
---
apiVersion: gpucloud/v1
kind: Job
metadata: {name: b}
spec: {replicas: 2, gpusPerReplica: 8, command: ['true'], workingDir: /abs/elsewhere}
---
`), 0o644)
	jobs, err := readJobFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, j := range jobs {
		got = append(got, j.Metadata.Name+" "+j.Spec.WorkingDir+" "+gangSummary(j))
	}
	want := []string{"a " + filepath.Join(dir, "work") + " 1 GPU", "b /abs/elsewhere 2 x 8 GPUs (16)"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("jobs (-want +got):\n%s", d)
	}

	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: gpucloud/v1\nkind: Job\nmetadata: {name: x}\nspec: {replica: 1, gpusPerReplica: 1, command: ['true']}\n"), 0o644)
	_, err = readJobFile(bad, nil)
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "spec.replica") {
		t.Errorf("err = %v, want the file and the misspelt field", err)
	}
	missing := filepath.Join(dir, "nowork.yaml")
	os.WriteFile(missing, []byte("apiVersion: gpucloud/v1\nkind: Job\nmetadata: {name: x}\nspec: {replicas: 1, gpusPerReplica: 1, command: ['true'], workingDir: nope}\n"), 0o644)
	if _, err = readJobFile(missing, nil); err == nil || !strings.Contains(err.Error(), "spec.workingDir") {
		t.Errorf("err = %v, want spec.workingDir named", err)
	}
}

// The example jobs must stay valid: the demo and the README submit them.
func TestExamplesAreValidJobs(t *testing.T) {
	for _, name := range []string{"hello", "ddp", "deepspeed", "mpi"} {
		jobs, err := readJobFile(filepath.Join("..", "..", "examples", name, "job.yaml"), nil)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if len(jobs) != 1 || jobs[0].Spec.WorkingDir == "" {
			t.Errorf("%s: want one job with a working directory", name)
		}
	}
}

func TestToYAMLKeepsAPINamesAndOrder(t *testing.T) {
	j := &api.Job{APIVersion: api.Version, Kind: api.KindJob, Metadata: api.ObjectMeta{Name: "x", ID: "j1"},
		Spec:   api.JobSpec{Replicas: 2, GPUsPerReplica: 8, Command: []string{"python3", "-c", "print('hi: there')"}},
		Status: api.JobStatus{Phase: api.PhaseRunning}}
	b, err := toYAML(j)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{"apiVersion: gpucloud/v1\nkind: Job\nmetadata:\n", "gpusPerReplica: 8", "phase: Running"} {
		if !strings.Contains(s, want) {
			t.Errorf("YAML lacks %q:\n%s", want, s)
		}
	}
	back, err := api.DecodeJob(b) // what get -o yaml prints can be submitted again
	if err != nil {
		t.Fatalf("%v\n%s", err, s)
	}
	if d := cmp.Diff(j.Spec.Command, back.Spec.Command); d != "" {
		t.Errorf("command changed (-want +got):\n%s", d)
	}
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second: "0s", 45 * time.Second: "45s", 119 * time.Second: "119s", 3*time.Minute + 12*time.Second: "3m12s",
		5 * time.Minute: "5m", 2 * time.Hour: "120m", 5 * time.Hour: "5h", 50 * time.Hour: "2d2h", 10 * 24 * time.Hour: "10d",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %s, want %s", d, got, want)
		}
	}
}

func TestRangeListAndBar(t *testing.T) {
	if got := rangeList([]int{8, 0, 1, 2, 3, 10, 11}); got != "0-3,8,10-11" {
		t.Errorf("rangeList = %s", got)
	}
	for _, tc := range []struct {
		a, b int
		want string
	}{{0, 8, "[....]"}, {8, 8, "[####]"}, {1, 64, "[#...]"}, {4, 8, "[##..]"}, {0, 0, "[....]"}} {
		if got := bar(tc.a, tc.b, 4); got != tc.want {
			t.Errorf("bar(%d, %d) = %s, want %s", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestExplain(t *testing.T) {
	cn := &conn{url: "http://127.0.0.1:1", source: "--server"}
	tests := []struct {
		err  error
		what string
		want string
	}{
		{&client.Error{Code: 404, Msg: "job x not found"}, `job "x"`, `job "x" not found`},
		{&client.Error{Code: 404, Msg: "no such route"}, "", "no such route"},
		{&client.Error{Code: 400, Msg: "spec.replicas: must be at least 1", Fields: []api.FieldError{{Field: "spec.replicas", Message: "must be at least 1"}}}, "", "spec.replicas: must be at least 1"},
		{&client.Error{Code: 401, Msg: "unknown token"}, "", "the server refused the token (unknown token)"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}, "", "cannot reach the gpucloud server at http://127.0.0.1:1 (from --server): is `gpucloud up` running?"},
	}
	for _, tt := range tests {
		got := cn.explain(tt.err, tt.what).Error()
		if !strings.HasPrefix(got, tt.want) || strings.Contains(got, "\n") {
			t.Errorf("explain(%v) = %q, want one line starting %q", tt.err, got, tt.want)
		}
	}
}

func TestBuildTop(t *testing.T) {
	node := func(name string, gpus, alloc int) api.Node {
		return api.Node{Metadata: api.ObjectMeta{Name: name}, Status: api.NodeStatus{Phase: api.NodeReady, GPUs: gpus, GPUsAllocated: alloc, Leaf: "leaf-0"}}
	}
	running := func(tenant string, gpus int, hosts string) api.Job {
		return api.Job{Metadata: api.ObjectMeta{Tenant: tenant}, Spec: api.JobSpec{Replicas: 1, GPUsPerReplica: gpus},
			Status: api.JobStatus{Phase: api.PhaseRunning, Placement: &api.Placement{GPUs: gpus, Groups: []api.PlacementGroup{{Hosts: hosts, GPUs: "0-3"}}}}}
	}
	pending := api.Job{Metadata: api.ObjectMeta{Tenant: "b"}, Spec: api.JobSpec{Replicas: 2, GPUsPerReplica: 8}, Status: api.JobStatus{Phase: api.PhasePending}}
	done := api.Job{Metadata: api.ObjectMeta{Tenant: "c"}, Spec: api.JobSpec{Replicas: 1, GPUsPerReplica: 8}, Status: api.JobStatus{Phase: api.PhaseSucceeded}}
	rep := buildTop([]api.Node{node("n1", 8, 4), node("n2", 8, 8)},
		[]api.Job{running("a", 4, "n1"), running("b", 8, "n2"), running("b", 0, "n2"), pending, done})
	want := &topReport{GPUs: 16, Allocated: 12,
		Nodes: []topNode{
			{Name: "n2", Status: "Ready", Leaf: "leaf-0", GPUs: 8, Allocated: 8, Jobs: 2},
			{Name: "n1", Status: "Ready", Leaf: "leaf-0", GPUs: 8, Allocated: 4, Jobs: 1},
		},
		Tenants: []topTenant{{Name: "b", GPUs: 8, Running: 2, Pending: 1, PendingGPUs: 16}, {Name: "a", GPUs: 4, Running: 1}},
	}
	if d := cmp.Diff(want, rep); d != "" {
		t.Errorf("top (-want +got):\n%s", d)
	}
}

func TestDescribeJobGroupsPlacementByLeaf(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	j := &api.Job{Metadata: api.ObjectMeta{Name: "train", ID: "j1", Tenant: "t"},
		Spec: api.JobSpec{Queue: "q", Replicas: 4, GPUsPerReplica: 4, Launch: api.LaunchPerGPU, Command: []string{"python3", "train.py", "--lr", "0.1 0.2"}},
		Status: api.JobStatus{Phase: api.PhaseRunning, Generation: 1, SubmittedAt: now.Add(-time.Minute), StartedAt: now.Add(-30 * time.Second),
			Placement: &api.Placement{Nodes: 3, GPUs: 16, Replicas: 4, Leaves: 2, MinLeaves: 1, Groups: []api.PlacementGroup{
				{Hosts: "n[1-2]", GPUs: "0-3"}, {Hosts: "n3", GPUs: "0-7"}}}}}
	nodes := []api.Node{
		{Metadata: api.ObjectMeta{Name: "n1"}, Status: api.NodeStatus{Leaf: "leaf-a"}},
		{Metadata: api.ObjectMeta{Name: "n2"}, Status: api.NodeStatus{Leaf: "leaf-b"}},
		{Metadata: api.ObjectMeta{Name: "n3"}, Status: api.NodeStatus{Leaf: "leaf-a"}},
	}
	evs := []api.Event{{Time: now.Add(-30 * time.Second), Reason: "Scheduled", Message: "16 GPUs"}, {Time: now.Add(-time.Minute), Reason: "Submitted"}}
	var b bytes.Buffer
	if err := describeJob(&b, j, nodes, evs, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Command:      python3 train.py --lr '0.1 0.2'",
		"Placement: 16 GPUs on 3 nodes, 2 leaves (fewest leaves possible: 1)",
		// leaf-a holds n1 (ranks 0-3) and n3 (ranks 8-15); leaf-b holds n2.
		"  leaf-a   n1     0-3 (4)   0-3",
		"           n3     0-7 (8)   8-15",
		"  leaf-b   n2     0-3 (4)   4-7",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("describe lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "Submitted") > strings.Index(out, "Scheduled") {
		t.Errorf("events not in time order:\n%s", out)
	}
}

// A real control plane (embedded etcd) with a node registered through the
// agent protocol, driven by the CLI as a user would.
func TestCLIAgainstServer(t *testing.T) {
	dir := isolate(t)
	url, token := startTestServer(t, filepath.Join(dir, "data"))
	t.Setenv(envServer, url)
	t.Setenv(envToken, token)
	ctx := context.Background()
	admin := client.New([]string{url}, token, client.Options{})
	if _, err := admin.Register(ctx, &api.NodeRegistration{Name: "node-1", Address: "127.0.0.1", Inventory: api.NodeInventory{GPUs: emulatedGPUs(4)}}); err != nil {
		t.Fatal(err)
	}

	job := filepath.Join(dir, "job.yaml")
	os.WriteFile(job, []byte("apiVersion: gpucloud/v1\nkind: Job\nmetadata: {name: train}\nspec: {replicas: 2, gpusPerReplica: 2, command: [sleep, '60']}\n"), 0o644)
	out, _, err := cli(t, "submit", "-f", job, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var created api.Job
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.Metadata.ID == "" {
		t.Fatalf("submit -o json: %v\n%s", err, out)
	}
	id := created.Metadata.ID

	// get job ID -o json prints status.phase; the job runs on node-1.
	var got api.Job
	waitUntil(t, 10*time.Second, "job running", func() bool {
		out, _, err := cli(t, "get", "job", id, "-o", "json")
		return err == nil && json.Unmarshal([]byte(out), &got) == nil && got.Status.Phase == api.PhaseRunning
	})
	out, _, err = cli(t, "get", "jobs")
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "Running") {
		t.Errorf("get jobs: %v\n%s", err, out)
	}
	out, _, err = cli(t, "describe", "job", "train")
	if err != nil || !strings.Contains(squeeze(out), "local node-1 0-3 (4) 0-1") || !strings.Contains(out, "Scheduled") {
		t.Errorf("describe job: %v\n%s", err, out)
	}
	out, _, err = cli(t, "top", "-o", "json")
	var rep topReport
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil || rep.Allocated != 4 || len(rep.Tenants) != 1 || rep.Tenants[0].GPUs != 4 {
		t.Errorf("top: %v\n%s", err, out)
	}
	out, _, err = cli(t, "get", "nodes", "-o", "name")
	if err != nil || out != "node-1\n" {
		t.Errorf("get nodes -o name = %q, %v", out, err)
	}

	// Errors are one line that names the object.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "job", "nope"}, `job "nope" not found`},
		{[]string{"describe", "node", "nope"}, `node "nope" not found`},
		{[]string{"cordon", "nope"}, `node "nope" not found`},
		{[]string{"get", "jobs", "-o", "xml"}, "-o xml: want one of table, wide, json, yaml, name"},
		{[]string{"logs", id, "--rank", "7"}, "--rank 7: job " + id + " has ranks 0-1"},
		{[]string{"queue", "create", "default", "--quota", "1"}, `queue "default" already exists`},
	} {
		_, _, err := cli(t, tc.args...)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}

	// Administration.
	if _, _, err := cli(t, "tenant", "create", "research", "--description", "LLMs"); err != nil {
		t.Fatal(err)
	}
	if out, _, err = cli(t, "queue", "create", "research", "--quota", "2", "--tenant", "research"); err != nil || !strings.Contains(out, "quota 2") {
		t.Fatalf("queue create: %v %s", err, out)
	}
	tok, _, err := cli(t, "token", "create", "--tenant", "research")
	if err != nil || !strings.HasPrefix(tok, "gct_") {
		t.Fatalf("token create: %v %q", err, tok)
	}
	// The tenant's token sees none of the default tenant's jobs.
	out, _, err = cli(t, "get", "jobs", "--token", strings.TrimSpace(tok), "-o", "name")
	if err != nil || out != "" {
		t.Errorf("a tenant token lists %q, %v", out, err)
	}
	out, _, err = cli(t, "get", "queues")
	if err != nil || !strings.Contains(out, "research") {
		t.Errorf("get queues: %v\n%s", err, out)
	}

	// cordon, drain (the gang goes back to the queue), uncordon.
	if out, _, err = cli(t, "drain", "node-1", "--reason", "test", "--wait", "--timeout", "20s"); err != nil || !strings.Contains(out, "drained") {
		t.Fatalf("drain: %v\n%s", err, out)
	}
	j, _ := admin.Job(ctx, id)
	if j.Status.Phase != api.PhasePending || j.Status.Requeues != 1 {
		t.Errorf("after drain: %s, requeued %d times; want Pending, 1", j.Status.Phase, j.Status.Requeues)
	}
	out, _, _ = cli(t, "get", "nodes")
	if !strings.Contains(out, "Ready,Draining") {
		t.Errorf("get nodes after drain:\n%s", out)
	}
	if _, _, err = cli(t, "uncordon", "node-1"); err != nil {
		t.Fatal(err)
	}
	out, _, err = cli(t, "cancel", "train")
	if err != nil || !strings.Contains(out, "cancelled") {
		t.Fatalf("cancel: %v %s", err, out)
	}
	_, _, err = cli(t, "cancel", id)
	if err == nil || !strings.Contains(err.Error(), "has already ended: Cancelled") {
		t.Errorf("second cancel: %v", err)
	}
	out, _, err = cli(t, "get", "job", id, "-o", "yaml")
	if err != nil || !strings.Contains(out, "phase: Cancelled") {
		t.Errorf("get -o yaml: %v\n%s", err, out)
	}
}

func TestCLIWithoutServer(t *testing.T) {
	isolate(t)
	_, _, err := cli(t, "get", "jobs")
	if err == nil || !strings.HasPrefix(err.Error(), "no server: run `gpucloud up`") {
		t.Errorf("err = %v", err)
	}
	port := testnet.FreePort(t)
	_, _, err = cli(t, "get", "jobs", "--server", fmt.Sprintf("127.0.0.1:%d", port), "--token", "x")
	if err == nil || !strings.Contains(err.Error(), "cannot reach the gpucloud server") {
		t.Errorf("err = %v", err)
	}
}

func TestCompletionScripts(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		out, _, err := cli(t, "completion", sh)
		if err != nil || !strings.Contains(out, "gpucloud") {
			t.Errorf("completion %s: %v (%d bytes)", sh, err, len(out))
		}
	}
	if _, _, err := cli(t, "completion", "tcsh"); err == nil {
		t.Error("completion tcsh: want an error")
	}
}

// Every user command has examples in its help.
func TestHelpHasExamples(t *testing.T) {
	root := newRoot()
	for _, name := range []string{"up", "demo", "submit", "get", "describe", "logs", "cancel", "cordon", "uncordon", "drain", "top", "completion"} {
		c, _, err := root.Find([]string{name})
		if err != nil || c.Name() != name {
			t.Errorf("%s: not found", name)
			continue
		}
		if strings.TrimSpace(c.Example) == "" {
			t.Errorf("%s --help has no example", name)
		}
	}
	for _, path := range [][]string{{"tenant", "create"}, {"queue", "create"}, {"token", "create"}, {"get", "jobs"}, {"describe", "job"}} {
		c, _, err := root.Find(path)
		if err != nil || strings.TrimSpace(c.Example) == "" {
			t.Errorf("%v --help has no example", path)
		}
	}
}

// squeeze collapses runs of spaces, to compare table rows.
func squeeze(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, "\n")
}

func emulatedGPUs(n int) []api.GPU {
	gpus := make([]api.GPU, n)
	for i := range gpus {
		gpus[i] = api.GPU{Index: i, UUID: fmt.Sprintf("GPU-test-%d", i), Model: "H100-80GB", MemoryMiB: 81559, Emulated: true}
	}
	return gpus
}

// startTestServer runs a control plane on an embedded etcd (fsync off) on
// loopback ports and returns its URL and admin token.
func startTestServer(t *testing.T, dir string) (string, string) {
	t.Helper()
	s, tok := servertest.Start(t, dir, nil)
	return "http://" + s.Addr(), tok
}

func waitUntil(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestClientURL(t *testing.T) {
	for listen, want := range map[string]string{
		"127.0.0.1:8080": "http://127.0.0.1:8080", ":9090": "http://127.0.0.1:9090",
		"0.0.0.0:80": "http://127.0.0.1:80", "[::]:8080": "http://127.0.0.1:8080", "10.1.2.3:8080": "http://10.1.2.3:8080",
	} {
		if got, err := clientURL(listen); err != nil || got != want {
			t.Errorf("clientURL(%q) = %q, %v; want %q", listen, got, err, want)
		}
	}
	if _, err := clientURL("8080"); err == nil || !strings.Contains(err.Error(), "--listen") {
		t.Errorf("clientURL(8080): %v", err)
	}
}

func TestIndenter(t *testing.T) {
	var b bytes.Buffer
	w := indent(&b, "  ")
	fmt.Fprint(w, "a\nb")
	fmt.Fprint(w, "c\n\nd\n")
	if got := b.String(); got != "  a\n  bc\n  \n  d\n" {
		t.Errorf("indent = %q", got)
	}
}

// FuzzJobFile: any bytes as a job file give jobs that validate, or an
// error of one line; never a panic.
func FuzzJobFile(f *testing.F) {
	for _, name := range []string{"hello", "ddp", "deepspeed", "mpi"} {
		if b, err := os.ReadFile(filepath.Join("..", "..", "examples", name, "job.yaml")); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("---\n---\n"))
	f.Add([]byte(`{"apiVersion":"gpucloud/v1","kind":"Job","metadata":{"name":"a"},"spec":{"replicas":1,"gpusPerReplica":1,"command":["x"]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "job.yaml")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Skip()
		}
		jobs, err := readJobFile(path, nil)
		if err != nil {
			if strings.Contains(err.Error(), "\n") && !strings.Contains(err.Error(), "invalid YAML") {
				t.Errorf("error on several lines: %q", err)
			}
			return
		}
		for _, j := range jobs {
			if err := api.ValidateJob(j); err != nil {
				t.Errorf("readJobFile returned an invalid job: %v", err)
			}
		}
	})
}

func TestDemoSaysWhatIsMissing(t *testing.T) {
	torch := &api.Job{Spec: api.JobSpec{Command: []string{"sh", "-c", `"$PYTHON" -m torch.distributed.run train.py`}, Env: map[string]string{"PYTHON": "/nonexistent/python3"}}}
	if got := demoMissing(torch); !strings.Contains(got, "needs PyTorch: /nonexistent/python3 cannot import torch") {
		t.Errorf("torch job: %q", got)
	}
	t.Setenv("PATH", t.TempDir())
	mpi := &api.Job{Spec: api.JobSpec{Command: []string{"sh", "-c", "exec mpirun -np 4 python3 pi.py"}}}
	if got := demoMissing(mpi); !strings.Contains(got, "needs mpirun") {
		t.Errorf("mpi job: %q", got)
	}
	plain := &api.Job{Spec: api.JobSpec{Command: []string{"python3", "train.py"}}}
	if got := demoMissing(plain); got != "" {
		t.Errorf("plain job: %q", got)
	}
}
