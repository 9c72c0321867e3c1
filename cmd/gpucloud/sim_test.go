package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const simSlice = "../../internal/sim/testdata/philly_first2000.csv"

func TestSimJSON(t *testing.T) {
	out, err := run(t, "sim", "--trace", simSlice, "--max-jobs", "300", "--gpus", "64", "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, k := range []string{"jobs", "completed", "avg_jct_s", "p50_jct_s", "p99_jct_s", "avg_queue_s", "p99_queue_s",
		"makespan_s", "utilization", "goodput", "locality_optimal_frac", "preemptions", "failures", "lost_gpu_hours",
		"jain_fairness", "wall_s", "events_per_s"} {
		if _, ok := r[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	if r["jobs"] != 300.0 || r["completed"] != 300.0 || r["policy"] != "default" {
		t.Errorf("jobs %v, completed %v, policy %v", r["jobs"], r["completed"], r["policy"])
	}
}

func TestSimCompareAndPlots(t *testing.T) {
	dir := t.TempDir()
	out, err := run(t, "sim", "--trace", simSlice, "--trace-format", "philly", "--max-jobs", "200", "--gpus", "32",
		"--compare", "fifo,las", "--failures", "off", "--plot", dir)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, "fifo") || !strings.Contains(out, "las") || !strings.Contains(out, "avg JCT") {
		t.Errorf("comparison table missing:\n%s", out)
	}
	for _, f := range []string{"utilization.svg", "queue.svg", "jct_cdf.svg"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("plot %s: %v", f, err)
		}
	}
}

func TestSimSynthetic(t *testing.T) {
	out, err := run(t, "sim", "--synthetic", "gavel", "--jobs", "500", "--gpus", "256", "--seed", "3", "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var r struct{ Jobs, Completed int }
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Jobs != 500 || r.Completed != 500 {
		t.Errorf("%v %+v", err, r)
	}
}

func TestSimErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.csv")
	if err := os.WriteFile(bad, []byte("submit_s,duration_s,gpus,color\n0,60,1,red\n5,sixty,1,blue\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sim", "--trace", bad, "--gpus", "8"}, "bad.csv:3: column duration_s"},
		{[]string{"sim", "--trace", bad}, "--gpus"},
		{[]string{"sim", "--gpus", "8"}, "--trace FILE or --synthetic"},
		{[]string{"sim", "--trace", bad, "--gpus", "8", "--policy", "sjf"}, "unknown policy"},
		{[]string{"sim", "--trace", bad, "--gpus", "8", "--failures", "maybe"}, "--failures"},
		{[]string{"sim", "--synthetic", "llm", "--gpus", "512"}, "pre-training"},
	} {
		out, err := run(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v (%s), want an error with %q", tc.args, err, out, tc.want)
		}
	}
}
