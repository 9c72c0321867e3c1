package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// run executes the CLI in-process and returns stdout and the error.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestTopologyGenValidateShow(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "fleet.yaml")
	if _, err := run(t, "topology", "gen", "--preset", "ndv5", "--gpus", "4096", "-o", file); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "topology", "validate", file, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var sum struct {
		Nodes    int `json:"nodes"`
		GPUs     int `json:"gpus"`
		Switches int `json:"switches"`
		Levels   []struct {
			Name  string
			Count int
		} `json:"levels"`
		GPUModels map[string]int `json:"gpu_models"`
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if sum.Nodes != 512 || sum.GPUs != 4096 || sum.GPUModels["H100-80GB"] != 4096 || len(sum.Levels) != 2 {
		t.Errorf("summary %+v", sum)
	}
	total := 0
	for _, l := range sum.Levels {
		total += l.Count
	}
	if total != sum.Switches {
		t.Errorf("switches per level sum to %d, total says %d", total, sum.Switches)
	}
	out, err = run(t, "topology", "show", file)
	if err != nil || !strings.Contains(out, "bisection") {
		t.Errorf("show: %v\n%s", err, out)
	}
}

func TestTopologyValidateBadFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "bad.yaml")
	doc := "apiVersion: gpucloud/v1\nkind: Fabric\nmetadata: {name: x}\nspec:\n  nodeClasses: [{name: c, gpuModel: H100-80GB, gpus: 8}]\n  domains:\n    - {name: top, level: cluster}\n    - {name: l, level: leaf, parent: top, nodes: [{hosts: \"n[5-2]\", class: c}]}\n"
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := run(t, "topology", "validate", file)
	if err == nil {
		t.Fatal("bad file validated")
	}
	if want := file + ":8: "; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q does not start with %q", err, want)
	}
	if _, err := run(t, "topology", "validate", file, "--format", "nope"); err == nil || !strings.Contains(err.Error(), "unknown format") {
		t.Errorf("bad --format: %v", err)
	}
	if _, err := run(t, "topology", "gen", "--preset", "ndv5", "--gpus", "12"); err == nil {
		t.Error("12 GPUs of 8-GPU nodes generated")
	}
}

// TestTopologyNodeClass: --node-class gives a Slurm tree its nodes'
// hardware; an unknown name and a native file are refused by name.
func TestTopologyNodeClass(t *testing.T) {
	file := filepath.Join(t.TempDir(), "topology.conf")
	if err := os.WriteFile(file, []byte("SwitchName=s0 Nodes=n[0-1]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "topology", "validate", "--node-class", "gb200-nvl72", file)
	if err != nil || !strings.Contains(out, "2 nodes, 8 GPUs") {
		t.Fatalf("validate --node-class gb200-nvl72: %v\n%s", err, out)
	}
	if out, err := run(t, "topology", "show", "--node-class", "ndv5", file); err != nil || !strings.Contains(out, "H100-80GB") {
		t.Fatalf("show --node-class ndv5: %v\n%s", err, out)
	}
	if _, err := run(t, "topology", "validate", "--node-class", "dgx", file); err == nil || !strings.Contains(err.Error(), `--node-class "dgx"`) {
		t.Fatalf("unknown class: %v", err)
	}
	native := filepath.Join(t.TempDir(), "fleet.yaml")
	if _, err := run(t, "topology", "gen", "--preset", "ndv5", "--gpus", "64", "-o", native); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "topology", "validate", "--node-class", "ndv5", native); err == nil || !strings.Contains(err.Error(), "names its own node classes") {
		t.Fatalf("native file with a class: %v", err)
	}
}
