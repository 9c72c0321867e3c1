package workload

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseCSV(t *testing.T) {
	in := `# a comment line
gpus, duration_s ,submit_s,id,tenant,priority,gpus_per_node,gpu_model,preemptible,min_gpus,checkpoint_s,notes
16,3600,10.5,big,research,5,8,H100-80GB,no,8,600,first
1,60,0,,,,,,,,,second

4,120.25,10.5,x,ops,,4,,yes,,0,
`
	tr, err := ParseCSV("jobs.csv", strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Job{
		{ID: "job-4", Tenant: "default", Submit: 0, Duration: time.Minute, GPUs: 1, Preemptible: true, Line: 4},
		{ID: "big", Tenant: "research", Submit: 10500 * time.Millisecond, Duration: time.Hour, GPUs: 16, GPUsPerNode: 8,
			GPUModel: "H100-80GB", Priority: 5, Preemptible: false, MinGPUs: 8, Checkpoint: 10 * time.Minute, Line: 3},
		{ID: "x", Tenant: "ops", Submit: 10500 * time.Millisecond, Duration: 120250 * time.Millisecond, GPUs: 4,
			GPUsPerNode: 4, Preemptible: true, Checkpoint: NoCheckpoint, Line: 6},
	}
	if d := cmp.Diff(want, tr.Jobs); d != "" {
		t.Errorf("jobs (-want +got):\n%s", d)
	}
	if len(tr.Warnings) != 1 || !strings.Contains(tr.Warnings[0], `"notes"`) {
		t.Errorf("want one warning about the notes column, got %q", tr.Warnings)
	}
	for _, j := range tr.Jobs {
		if err := j.Validate(); err != nil {
			t.Errorf("loaded job does not validate: %v", err)
		}
	}
}

// TestParseCSVErrors checks that every bad input names its line and column.
func TestParseCSVErrors(t *testing.T) {
	tests := []struct {
		name, in string
		line     int
		col      string
		msg      string
	}{
		{"empty", "", 0, "", "empty file"},
		{"header only", "submit_s,duration_s,gpus\n", 0, "", "no jobs"},
		{"missing required", "submit_s,gpus,tenant\n0,1,a\n", 1, "duration_s", "required column missing"},
		{"two missing", "tenant\na\n", 1, "submit_s,duration_s,gpus", "required column missing"},
		{"duplicate header", "submit_s,duration_s,gpus,gpus\n0,1,1,1\n", 1, "gpus", "named twice"},
		{"unnamed header", "submit_s,,duration_s,gpus\n0,1,1,1\n", 1, "", "no name"},
		{"bad number", "submit_s,duration_s,gpus\n0,1,1\nsoon,1,1\n", 3, "submit_s", "not a number"},
		{"negative submit", "submit_s,duration_s,gpus\n-1,1,1\n", 2, "submit_s", "at least 0"},
		{"zero duration", "submit_s,duration_s,gpus\n0,0,1\n", 2, "duration_s", "positive"},
		{"nan duration", "submit_s,duration_s,gpus\n0,NaN,1\n", 2, "duration_s", "not a number"},
		{"huge duration", "submit_s,duration_s,gpus\n0,1e12,1\n", 2, "duration_s", "century"},
		{"empty gpus", "submit_s,duration_s,gpus\n0,1,\n", 2, "gpus", "empty value"},
		{"fractional gpus", "submit_s,duration_s,gpus\n0,1,1.5\n", 2, "gpus", "not an integer"},
		{"zero gpus", "submit_s,duration_s,gpus\n0,1,0\n", 2, "gpus", "out of range"},
		{"per node does not divide", "submit_s,duration_s,gpus,gpus_per_node\n0,1,12,8\n", 2, "gpus_per_node", "does not divide"},
		{"per node too big", "submit_s,duration_s,gpus,gpus_per_node\n0,1,128,128\n", 2, "gpus_per_node", "out of range"},
		{"bad bool", "submit_s,duration_s,gpus,preemptible\n0,1,1,maybe\n", 2, "preemptible", "not a boolean"},
		{"min above gpus", "submit_s,duration_s,gpus,min_gpus\n0,1,4,8\n", 2, "min_gpus", "out of range"},
		{"min not multiple", "submit_s,duration_s,gpus,gpus_per_node,min_gpus\n0,1,16,8,4\n", 2, "min_gpus", "multiple"},
		{"priority overflow", "submit_s,duration_s,gpus,priority\n0,1,1,3000000000\n", 2, "priority", "out of range"},
		{"negative checkpoint", "submit_s,duration_s,gpus,checkpoint_s\n0,1,1,-5\n", 2, "checkpoint_s", "at least 0"},
		{"duplicate id", "id,submit_s,duration_s,gpus\na,0,1,1\nb,0,1,1\na,0,1,1\n", 4, "id", "already used on line 2"},
		{"short row", "submit_s,duration_s,gpus\n0,1,1\n0,1\n", 3, "", "wrong number of fields"},
		{"bad quote", "submit_s,duration_s,gpus\n0,1,\"1\n", 2, "", "quote"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCSV("w.csv", strings.NewReader(tc.in))
			var we *Error
			if !errors.As(err, &we) {
				t.Fatalf("want a *workload.Error, got %v", err)
			}
			if we.File != "w.csv" || we.Line != tc.line || we.Column != tc.col || !strings.Contains(we.Msg, tc.msg) {
				t.Errorf("got %q (line %d, column %q); want line %d, column %q, message with %q",
					err, we.Line, we.Column, tc.line, tc.col, tc.msg)
			}
			if tc.line > 0 && !strings.Contains(err.Error(), "w.csv:") {
				t.Errorf("message %q does not name the file", err)
			}
		})
	}
}

func TestParsePhillySlice(t *testing.T) {
	tr, err := Load(filepath.Join("..", "testdata", "philly_first2000.csv"), FormatPhilly)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Jobs) != 2000 {
		t.Fatalf("got %d jobs, want 2000", len(tr.Jobs))
	}
	checkTrace(t, tr)
	// The file's first row: 2017-10-09 07:01:55,66.0,1,66.0,11cb48.
	var first *Job
	for i := range tr.Jobs {
		if tr.Jobs[i].ID == "p00000" {
			first = &tr.Jobs[i]
		}
	}
	if first == nil {
		t.Fatal("job p00000 missing")
	}
	at := tr.Start.Add(first.Submit)
	if want := time.Date(2017, 10, 9, 7, 1, 55, 0, time.UTC); !at.Equal(want) || first.Duration != 66*time.Second ||
		first.GPUs != 1 || first.Tenant != "11cb48" || first.Line != 2 {
		t.Errorf("first row read as %+v at %v", *first, at)
	}
}

// checkTrace checks what every loaded trace must satisfy.
func checkTrace(t *testing.T, tr *Trace) {
	t.Helper()
	ids := map[string]bool{}
	for i, j := range tr.Jobs {
		if err := j.Validate(); err != nil {
			t.Fatalf("job %d: %v", i, err)
		}
		if i > 0 && j.Submit < tr.Jobs[i-1].Submit {
			t.Fatalf("jobs not sorted by submit at %d", i)
		}
		if ids[j.ID] {
			t.Fatalf("id %s twice", j.ID)
		}
		ids[j.ID] = true
	}
	if tr.Jobs[0].Submit != 0 {
		t.Errorf("the earliest job is at %v, want offset 0", tr.Jobs[0].Submit)
	}
}

const phillyFull = "../../../../shared/traces/philly/adaptdl_philly_jobs.csv"

func TestParsePhillyFull(t *testing.T) {
	if _, err := os.Stat(phillyFull); err != nil {
		t.Skipf("the full Philly job list is not here (%v); it lives in /work/shared/traces/philly", err)
	}
	tr, err := Load(phillyFull, FormatPhilly)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Jobs) != 82247 {
		t.Errorf("got %d jobs, want 82,247", len(tr.Jobs))
	}
	checkTrace(t, tr)
	if want := time.Date(2017, 9, 4, 10, 30, 41, 0, time.UTC); !tr.Start.Equal(want) {
		t.Errorf("trace starts %v, want %v", tr.Start, want)
	}
	tenants := map[string]bool{}
	for _, j := range tr.Jobs {
		tenants[j.Tenant] = true
	}
	if len(tenants) != 15 {
		t.Errorf("got %d virtual clusters, want 15", len(tenants))
	}
}

func TestParsePhillyErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"wrong header", "submit_s,duration_s,gpus\n0,1,1\n", "p.csv:1: column timestamp: missing"},
		{"bad time", "timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-09T07:01:55,1,1,1,a\n", "p.csv:2: column timestamp"},
		{"bad gpus", "timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-09 07:01:55,1,x,1,a\n", "p.csv:2: column num_gpus"},
		{"zero duration", "timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-09 07:01:55,0,1,1,a\n", "p.csv:2: column duration"},
	}
	for _, tc := range tests {
		_, err := ParsePhilly("p.csv", strings.NewReader(tc.in))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error starting %q", tc.name, err, tc.want)
		}
	}
}

func FuzzParseCSV(f *testing.F) {
	f.Add("submit_s,duration_s,gpus\n0,1,1\n")
	f.Add("gpus,duration_s,submit_s,id,min_gpus,gpus_per_node,checkpoint_s,preemptible\n16,5,0,a,8,8,0,no\n")
	f.Add("submit_s,duration_s,gpus\n\"0\",1e3,8.0\n")
	f.Fuzz(func(t *testing.T, in string) {
		tr, err := ParseCSV("f.csv", strings.NewReader(in))
		if err != nil {
			var we *Error
			if !errors.As(err, &we) {
				t.Fatalf("error %v is not a *workload.Error", err)
			}
			return
		}
		for i, j := range tr.Jobs {
			if err := j.Validate(); err != nil {
				t.Fatalf("accepted job %d does not validate: %v", i, err)
			}
			if i > 0 && j.Submit < tr.Jobs[i-1].Submit {
				t.Fatalf("not sorted")
			}
		}
	})
}

func FuzzParsePhilly(f *testing.F) {
	f.Add("timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-09 07:01:55,66.0,1,66.0,11cb48\n")
	f.Fuzz(func(t *testing.T, in string) {
		tr, err := ParsePhilly("f.csv", strings.NewReader(in))
		if err != nil {
			var we *Error
			if !errors.As(err, &we) {
				t.Fatalf("error %v is not a *workload.Error", err)
			}
			return
		}
		for _, j := range tr.Jobs {
			if err := j.Validate(); err != nil {
				t.Fatalf("accepted job does not validate: %v", err)
			}
		}
	})
}
