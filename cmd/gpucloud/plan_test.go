package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestPlanJSON(t *testing.T) {
	out, err := run(t, "plan", "--model", "gpt3-175b", "--gpu", "h100", "--gpus", "1024", "--global-batch", "1536", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		TP, PP, DP, Microbatch int
		Recompute              string
		IterS                  float64 `json:"iter_s"`
		TFLOPS                 float64 `json:"tflops_per_gpu"`
		HWTFLOPS               float64 `json:"hw_tflops_per_gpu"`
		MFU                    float64 `json:"mfu"`
		MemoryGB               float64 `json:"memory_gb"`
		Fits                   *bool   `json:"fits"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if p.TP*p.PP*p.DP != 1024 {
		t.Errorf("tp*pp*dp = %d, want 1024", p.TP*p.PP*p.DP)
	}
	if p.TP > 8 {
		t.Errorf("tp=%d crosses the 8-GPU NVLink domain", p.TP)
	}
	if p.Fits == nil || !*p.Fits || p.MemoryGB > 80 || p.MemoryGB <= 0 {
		t.Errorf("fits=%v memory %.1f GB", p.Fits, p.MemoryGB)
	}
	if p.MFU <= 0 || p.MFU >= 1 || p.HWTFLOPS < p.TFLOPS || p.IterS <= 0 {
		t.Errorf("implausible figures %+v", p)
	}
}

func TestPlanTopJSONIsAList(t *testing.T) {
	out, err := run(t, "plan", "--model", "llama3-70b", "--gpu", "h100", "--gpus", "256", "--global-batch", "512", "--top", "3", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 3 {
		t.Fatalf("want a list of 3: %v\n%s", err, out)
	}
}

func TestPlanInfeasibleLayoutSaysWhy(t *testing.T) {
	_, err := run(t, "plan", "--model", "gpt3-175b", "--gpu", "h100", "--gpus", "1024", "--global-batch", "1536",
		"--tp", "16", "--pp", "8", "--dp", "8")
	if err == nil || !strings.Contains(err.Error(), "NVLink domain") {
		t.Errorf("want an NVLink-domain error, got %v", err)
	}
	_, err = run(t, "plan", "--model", "gpt3-175b", "--gpu", "h100", "--gpus", "8", "--global-batch", "8",
		"--tp", "8", "--pp", "1", "--dp", "1", "--recompute", "full")
	if err == nil || !strings.Contains(err.Error(), "GB") {
		t.Errorf("want a memory error, got %v", err)
	}
}
