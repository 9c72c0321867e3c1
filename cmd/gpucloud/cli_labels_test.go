package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
)

// get nodes -o wide shows the labels agents register, e.g. up's simulated
// nodes.
func TestGetNodesWideShowsLabels(t *testing.T) {
	dir := isolate(t)
	url, token := startTestServer(t, filepath.Join(dir, "data"))
	t.Setenv(envServer, url)
	t.Setenv(envToken, token)
	admin := client.New([]string{url}, token, client.Options{})
	reg := &api.NodeRegistration{Name: "sim-1", Address: "127.0.0.1", Inventory: api.NodeInventory{GPUs: emulatedGPUs(2)},
		Labels: map[string]string{api.LabelSimulated: "true", "rack": "r1"}}
	if _, err := admin.Register(context.Background(), reg); err != nil {
		t.Fatal(err)
	}
	out, _, err := cli(t, "get", "nodes", "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "LABELS") || !strings.Contains(lines[1], "gpucloud.io/simulated=true,rack=r1") {
		t.Errorf("get nodes -o wide:\n%s", out)
	}
}
