package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

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

func TestDecodeJobYAMLAndJSONAgree(t *testing.T) {
	y, err := DecodeJob([]byte(helloYAML))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(y)
	j, err := DecodeJob(b)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(y, j); d != "" {
		t.Fatalf("YAML and JSON differ (-yaml +json):\n%s", d)
	}
	want := JobSpec{Queue: "default", Replicas: 2, GPUsPerReplica: 1, Launch: LaunchPerNode,
		Command: []string{"sh", "-c", "echo rank=$RANK world=$WORLD_SIZE"}, Env: map[string]string{"KEY": "value"},
		RestartPolicy: RestartPolicy{MaxRestarts: 2}, Topology: TopologySpec{Required: "leaf"}}
	if d := cmp.Diff(want, y.Spec); d != "" {
		t.Fatalf("spec (-want +got):\n%s", d)
	}
}

func TestDecodeJobErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string // each must appear in the error
	}{
		{"zero replicas", strings.Replace(helloYAML, "replicas: 2", "replicas: 0", 1), []string{"spec.replicas: must be at least 1"}},
		{"negative gpus", strings.Replace(helloYAML, "gpusPerReplica: 1", "gpusPerReplica: -1", 1), []string{"spec.gpusPerReplica: must be at least 1"}},
		{"unknown field", strings.Replace(helloYAML, "replicas: 2", "replicas: 2\n  replica: 3", 1), []string{"spec.replica: unknown field"}},
		{"unknown nested", strings.Replace(helloYAML, "{maxRestarts: 2}", "{maxRestarts: 2, backoff: 1}", 1), []string{"spec.restartPolicy.backoff: unknown field"}},
		{"wrong type", strings.Replace(helloYAML, "replicas: 2", "replicas: two", 1), []string{"spec.replicas: want an integer"}},
		{"bad launch", strings.Replace(helloYAML, "per-node", "per-rack", 1), []string{"spec.launch: must be"}},
		{"bad level", strings.Replace(helloYAML, "required: leaf", "required: galaxy", 1), []string{"spec.topology.required: must be one of"}},
		{"bad name", strings.Replace(helloYAML, "name: hello", "name: Hello_World", 1), []string{"metadata.name: must be lower-case"}},
		{"reserved env", strings.Replace(helloYAML, "KEY: value", "RANK: '3'", 1), []string{"spec.env.RANK: is set by gpucloud"}},
		{"bad kind", strings.Replace(helloYAML, "kind: Job", "kind: Pod", 1), []string{`kind: must be "Job"`}},
		{"bad duration", strings.Replace(helloYAML, "queue: default", "queue: default\n  estimatedRuntime: soon", 1), []string{"spec.estimatedRuntime"}},
		{"no command", strings.Replace(helloYAML, `command: ["sh", "-c", "echo rank=$RANK world=$WORLD_SIZE"]`, "command: []", 1), []string{"spec.command: must not be empty"}},
		{"several at once", strings.NewReplacer("replicas: 2", "replicas: 0", "maxRestarts: 2", "maxRestarts: -1").Replace(helloYAML),
			[]string{"spec.replicas: must be at least 1", "spec.restartPolicy.maxRestarts"}},
		{"json unknown", `{"apiVersion":"gpucloud/v1","kind":"Job","metadata":{"name":"a"},"spec":{"replicas":1,"gpusPerReplica":1,"command":["x"],"nodes":3}}`, []string{"spec.nodes: unknown field"}},
		{"json trailing", `{"kind":"Job"} {}`, []string{"trailing data"}},
		{"empty", "  ", []string{"empty document"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeJob([]byte(tc.doc))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("want a ValidationError, got %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestPlacementIsCompact(t *testing.T) {
	nodes := make([]NodeGPUs, 16384)
	for i := range nodes {
		nodes[i] = NodeGPUs{Node: fmt.Sprintf("ndv5-%05d", i), GPUs: 0xff}
	}
	nodes[100].GPUs = 0x0f // a hole breaks the run
	p := Placement{Groups: CompactPlacement(nodes), Nodes: len(nodes)}
	b, _ := json.Marshal(p)
	if len(b) > 512 {
		t.Fatalf("placement of 16,384 nodes is %d bytes: %s", len(b), b)
	}
	back, err := p.Expand()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(nodes, back); d != "" {
		t.Fatalf("round trip (-want +got):\n%s", d)
	}
}

func TestGPUList(t *testing.T) {
	for _, m := range []uint64{1, 0xff, 0b1101, 1 << 63, 0xf0f0} {
		s := GPUList(m)
		back, err := ParseGPUList(s)
		if err != nil || back != m {
			t.Errorf("%b -> %q -> %b, %v", m, s, back, err)
		}
	}
	if GPUList(0b1101) != "0,2-3" {
		t.Errorf("GPUList(0b1101) = %q", GPUList(0b1101))
	}
	for _, bad := range []string{"", "x", "3-1", "64", "-1"} {
		if _, err := ParseGPUList(bad); err == nil {
			t.Errorf("ParseGPUList(%q) accepted", bad)
		}
	}
}

func TestBuildAssignments(t *testing.T) {
	j := &Job{Metadata: ObjectMeta{ID: "j1"}, Spec: JobSpec{Replicas: 4, GPUsPerReplica: 2, Launch: LaunchPerNode},
		Status: JobStatus{Generation: 3, MasterPort: 29511}}
	nodes := []NodeGPUs{{"a", 0b1111}, {"b", 0b110000}}
	as := BuildAssignments(j, nodes, "10.0.0.1")
	type rank struct {
		Node      string
		First     int
		Processes []Process
		World     int
	}
	var got []rank
	for i, a := range as {
		got = append(got, rank{nodes[i].Node, a.FirstRank, a.Processes, a.WorldSize})
	}
	want := []rank{
		{"a", 0, []Process{{0, 0, []int{0, 1}}, {1, 1, []int{2, 3}}}, 3},
		{"b", 2, []Process{{2, 0, []int{4, 5}}}, 3},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("per-node (-want +got):\n%s", d)
	}
	j.Spec.Launch = LaunchPerGPU
	as = BuildAssignments(j, nodes, "10.0.0.1")
	if as[1].FirstRank != 4 || as[1].WorldSize != 6 || len(as[1].Processes) != 2 {
		t.Fatalf("per-gpu: %+v", as[1])
	}
	env := as[1].RankEnv(as[1].Processes[1])
	for k, v := range map[string]string{"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "6", "CUDA_VISIBLE_DEVICES": "5",
		"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29511", "GPUCLOUD_GENERATION": "3", "NODE_RANK": "1"} {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
}

func TestValidateOthers(t *testing.T) {
	neg := -1
	if err := ValidateQueue(&Queue{Metadata: ObjectMeta{Name: "q"}, Spec: QueueSpec{Quota: -1, BorrowingLimit: &neg}}); err == nil ||
		!strings.Contains(err.Error(), "spec.quota") || !strings.Contains(err.Error(), "spec.borrowingLimit") {
		t.Errorf("queue: %v", err)
	}
	if err := ValidateToken(&TokenRequest{Role: RoleTenant}); err == nil || !strings.Contains(err.Error(), "tenant:") {
		t.Errorf("token: %v", err)
	}
	r := &NodeRegistration{Name: "n1", Address: "10.0.0.1", Inventory: NodeInventory{GPUs: []GPU{{Index: 1, UUID: "GPU-1"}}}}
	if err := ValidateRegistration(r); err == nil || !strings.Contains(err.Error(), "inventory.gpus") {
		t.Errorf("registration: %v", err)
	}
}

func FuzzDecodeJob(f *testing.F) {
	f.Add([]byte(helloYAML))
	f.Add([]byte(`{"apiVersion":"gpucloud/v1","kind":"Job","metadata":{"name":"a"},"spec":{"replicas":1,"gpusPerReplica":1,"command":["x"]}}`))
	f.Add([]byte("spec: [1, {a: b}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		j, err := DecodeJob(data)
		if err != nil {
			return
		}
		// What decodes must encode and decode to the same job.
		b, err := json.Marshal(j)
		if err != nil {
			t.Fatal(err)
		}
		j2, err := DecodeJob(b)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", b, err)
		}
		if d := cmp.Diff(j, j2); d != "" {
			t.Fatalf("round trip:\n%s", d)
		}
	})
}
