package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gpucloud/internal/api"
)

const deployYAML = `apiVersion: gpucloud/v1
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

func TestReadDeploymentFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "chat.yaml")
	os.WriteFile(good, []byte(deployYAML+"---\n"+strings.Replace(deployYAML, "name: chat", "name: code", 1)), 0o644)
	ds, err := readDeploymentFile(good, nil)
	if err != nil || len(ds) != 2 || ds[1].Metadata.Name != "code" || ds[0].Spec.Priority != 1000 {
		t.Fatalf("got %v %+v", err, ds)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(deployYAML+"---\n"+strings.Replace(deployYAML, "{min: 1, max: 8}", "{min: 5, max: 2}", 1)), 0o644)
	_, err = readDeploymentFile(bad, nil)
	if err == nil || !strings.Contains(err.Error(), "bad.yaml (document 2): spec.replicas.max") {
		t.Fatalf("error should name the file, the document and the field: %v", err)
	}
	_, err = readDeploymentFile("-", strings.NewReader("kind: Deployment\n"))
	if err == nil || !strings.HasPrefix(err.Error(), "standard input: ") {
		t.Fatalf("stdin: %v", err)
	}
}

func TestDeploymentTable(t *testing.T) {
	now := time.Now()
	d := api.Deployment{Metadata: api.ObjectMeta{Name: "chat", Tenant: "ml", CreatedAt: now.Add(-90 * time.Second)},
		Spec:   api.DeploymentSpec{Queue: "serving", GPUsPerReplica: 2, Replicas: api.ReplicaBounds{Min: 1, Max: 8}},
		Status: api.DeploymentStatus{Revision: "abc", Desired: 4, Ready: 3, Updated: 4, InFlight: 11, ScaleReason: "load 14"}}
	var b bytes.Buffer
	if err := deploymentTable(&b, []api.Deployment{d}, true, now); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[1]), " ") != "chat 3 4 1-8 4 11 2 90s ml serving abc load 14 -" {
		t.Fatalf("table:\n%s", b.String())
	}
}
