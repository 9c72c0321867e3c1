// Package workload holds what the simulator replays: jobs read from real
// traces (the Microsoft Philly job list, a documented generic CSV) and jobs
// generated from published distributions (Gavel's, and an LLM-era mix).
//
// Traces load into a slice sorted by submit time; generators stream, so a
// run of a million synthetic jobs keeps only the jobs in flight in memory.
package workload

import (
	"fmt"
	"slices"
	"time"
)

// NoCheckpoint marks a job that never checkpoints: a failure or a preemption
// loses everything it did since it last started.
const NoCheckpoint time.Duration = -1

// Job is one job of a workload, before any scheduling.
type Job struct {
	ID     string
	Tenant string
	// Submit is the submit time as an offset from the workload's start.
	Submit time.Duration
	// Duration is how long the job runs on an ideal placement with all its
	// GPUs.
	Duration time.Duration
	GPUs     int
	// GPUsPerNode is the size of one replica, placed inside one node. Zero
	// lets the simulator pick the largest divisor of GPUs that fits a node
	// of the fabric.
	GPUsPerNode int
	GPUModel    string
	Priority    int32
	Preemptible bool
	// MinGPUs > 0 makes the job elastic: it may run on as few GPUs.
	MinGPUs int
	// Checkpoint is the checkpoint interval: 0 means the simulator's
	// default, NoCheckpoint means never.
	Checkpoint time.Duration
	// Line is the source line (0 for generated jobs), for messages.
	Line int
}

// Validate checks the fields a loader or a generator must get right.
func (j *Job) Validate() error {
	switch {
	case j.ID == "":
		return fmt.Errorf("job without an id")
	case j.Submit < 0:
		return fmt.Errorf("job %s: submit time %v is negative", j.ID, j.Submit)
	case j.Duration <= 0:
		return fmt.Errorf("job %s: duration %v must be positive", j.ID, j.Duration)
	case j.GPUs < 1:
		return fmt.Errorf("job %s: gpus must be at least 1, got %d", j.ID, j.GPUs)
	case j.GPUsPerNode < 0 || (j.GPUsPerNode > 0 && j.GPUs%j.GPUsPerNode != 0):
		return fmt.Errorf("job %s: gpus_per_node %d does not divide gpus %d", j.ID, j.GPUsPerNode, j.GPUs)
	case j.MinGPUs < 0 || j.MinGPUs > j.GPUs:
		return fmt.Errorf("job %s: min_gpus %d must be between 0 and gpus %d", j.ID, j.MinGPUs, j.GPUs)
	case j.MinGPUs > 0 && j.GPUsPerNode > 0 && j.MinGPUs%j.GPUsPerNode != 0:
		return fmt.Errorf("job %s: min_gpus %d is not a multiple of gpus_per_node %d", j.ID, j.MinGPUs, j.GPUsPerNode)
	case j.Checkpoint < 0 && j.Checkpoint != NoCheckpoint:
		return fmt.Errorf("job %s: checkpoint interval %v is negative", j.ID, j.Checkpoint)
	}
	return nil
}

// Source hands out jobs in submit order.
type Source interface {
	// Next returns the next job; ok is false at the end.
	Next() (j Job, ok bool)
	// Len is the number of jobs the source will hand out, or -1.
	Len() int
}

// Trace is a workload read from a file.
type Trace struct {
	Name string
	// Start is the wall time of offset 0 (the first submit of a real trace).
	Start time.Time
	Jobs  []Job // sorted by Submit, ties in file order
	// Warnings lists what the loader set aside (unknown columns).
	Warnings []string
}

// Source returns a fresh source over the trace's jobs; each call starts
// again from the first job, so several policies can replay one trace.
func (t *Trace) Source() Source { return &sliceSource{jobs: t.Jobs} }

// Head keeps only the first n jobs in submit order (n <= 0 keeps all).
func (t *Trace) Head(n int) {
	if n > 0 && n < len(t.Jobs) {
		t.Jobs = t.Jobs[:n:n]
	}
}

// sortJobs orders jobs by submit time, keeping file order among equals so
// that the replay is the same on every run.
func sortJobs(jobs []Job) {
	slices.SortStableFunc(jobs, func(a, b Job) int {
		switch {
		case a.Submit < b.Submit:
			return -1
		case a.Submit > b.Submit:
			return 1
		}
		return 0
	})
}

type sliceSource struct {
	jobs []Job
	i    int
}

func (s *sliceSource) Next() (Job, bool) {
	if s.i >= len(s.jobs) {
		return Job{}, false
	}
	s.i++
	return s.jobs[s.i-1], true
}

func (s *sliceSource) Len() int { return len(s.jobs) }

// FromSlice returns a source over jobs, which must be sorted by Submit.
func FromSlice(jobs []Job) Source { return &sliceSource{jobs: jobs} }

// Tenants lists the tenants of the trace, sorted.
func (t *Trace) Tenants() []string {
	seen := map[string]bool{}
	var out []string
	for i := range t.Jobs {
		if !seen[t.Jobs[i].Tenant] {
			seen[t.Jobs[i].Tenant] = true
			out = append(out, t.Jobs[i].Tenant)
		}
	}
	slices.Sort(out)
	return out
}
