package api

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// chatYAML is the issue's example, as written there.
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

func TestDecodeDeploymentIssueExample(t *testing.T) {
	d, err := DecodeDeployment([]byte(chatYAML))
	if err != nil {
		t.Fatal(err)
	}
	want := DeploymentSpec{
		Queue: "serving", GPUsPerReplica: 1, Command: []string{"python3", "-m", "http.server", "$PORT"},
		Replicas: ReplicaBounds{Min: 1, Max: 8}, Readiness: ReadinessSpec{Path: "/health"},
		Autoscale: &AutoscaleSpec{TargetInflight: 4}, Priority: 1000,
	}
	if diff := cmp.Diff(want, d.Spec); diff != "" {
		t.Fatalf("spec (-want +got):\n%s", diff)
	}
	// JSON round trip: the priority class name survives, and the JSON
	// form decodes to the same deployment.
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"priority":"high"`) {
		t.Errorf("priority not written as its class: %s", b)
	}
	d2, err := DecodeDeployment(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(d, d2); diff != "" {
		t.Fatalf("JSON round trip (-yaml +json):\n%s", diff)
	}
}

func TestDeploymentDefaults(t *testing.T) {
	d, err := DecodeDeployment([]byte(strings.Replace(chatYAML, "{min: 1, max: 8}", "{min: 3}", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if d.Spec.Replicas.Max != 3 {
		t.Errorf("replicas.max defaults to min: got %d", d.Spec.Replicas.Max)
	}
	d, err = DecodeDeployment([]byte(strings.Replace(chatYAML, "priority: high", "priority: -5\n  rollout: {drainTimeout: 30s}", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if d.Spec.Priority != -5 || time.Duration(d.Spec.Rollout.DrainTimeout) != 30*time.Second {
		t.Errorf("priority %d, drainTimeout %v", d.Spec.Priority, d.Spec.Rollout.DrainTimeout)
	}
}

func TestDecodeDeploymentErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		name, from, to string
		want           string
	}{
		{"min zero without autoscale", "{min: 1, max: 8}\n  readiness: {path: /health}\n  autoscale: {targetInflight: 4}", "{min: 0, max: 8}\n  readiness: {path: /health}", "spec.replicas.min: must be at least 1"},
		{"negative min", "min: 1", "min: -1", "spec.replicas.min: must not be negative"},
		{"max below min", "{min: 1, max: 8}", "{min: 5, max: 2}", "spec.replicas.max: must be between"},
		{"max too large", "max: 8", "max: 5000", "spec.replicas.max"},
		{"no gpus", "gpusPerReplica: 1", "gpusPerReplica: 0", "spec.gpusPerReplica: must be at least 1"},
		{"tp does not divide", "gpusPerReplica: 1", "gpusPerReplica: 4\n  tensorParallel: 3", "spec.tensorParallel: must divide"},
		{"empty command", `command: ["python3", "-m", "http.server", "$PORT"]`, "command: []", "spec.command: must not be empty"},
		{"reserved env", "priority: high", "priority: high\n  env: {PORT: '80'}", "spec.env.PORT: is set by gpucloud"},
		{"bad env name", "priority: high", "priority: high\n  env: {1X: a}", "spec.env.1X: must be a shell variable name"},
		{"bad readiness path", "path: /health", "path: health", "spec.readiness.path"},
		{"zero target", "targetInflight: 4", "targetInflight: 0", "spec.autoscale.targetInflight: must be a positive number"},
		{"bad retry", "priority: high", "priority: high\n  router: {retry: sometimes}", "spec.router.retry: must be all, safe or none"},
		{"unknown priority", "priority: high", "priority: urgent", "want one of high, low, normal, or a number"},
		{"unknown field", "gpusPerReplica: 1", "gpusPerReplica: 1\n  replica: 2", "spec.replica: unknown field"},
		{"wrong kind", "kind: Deployment", "kind: Job", `kind: must be "Deployment"`},
		{"id set", "metadata: {name: chat}", "metadata: {name: chat, id: x}", "metadata.id"},
		{"bad name", "name: chat", "name: Chat_1", "metadata.name"},
		{"negative surge", "priority: high", "priority: high\n  rollout: {maxSurge: -1}", "spec.rollout.maxSurge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(chatYAML, tc.from, tc.to, 1)
			if doc == chatYAML {
				t.Fatalf("replacement %q not found", tc.from)
			}
			_, err := DecodeDeployment([]byte(doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestDeploymentMinZeroWithAutoscale(t *testing.T) {
	if _, err := DecodeDeployment([]byte(strings.Replace(chatYAML, "min: 1", "min: 0", 1))); err != nil {
		t.Fatalf("min 0 with autoscale refused: %v", err)
	}
}

func FuzzDecodeDeployment(f *testing.F) {
	f.Add([]byte(chatYAML))
	f.Add([]byte(`{"apiVersion":"gpucloud/v1","kind":"Deployment","metadata":{"name":"a"},"spec":{"gpusPerReplica":1,"command":["x"],"replicas":{"min":1},"priority":-3}}`))
	f.Add([]byte("spec: {priority: [1]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := DecodeDeployment(data)
		if err != nil {
			return
		}
		// What decodes must encode and decode to the same deployment.
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		d2, err := DecodeDeployment(b)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", b, err)
		}
		if diff := cmp.Diff(d, d2); diff != "" {
			t.Fatalf("round trip:\n%s", diff)
		}
	})
}
