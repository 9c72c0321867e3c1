package sched

import (
	"math/bits"
	"slices"
	"time"

	"gpucloud/internal/topology"
)

type jobState uint8

const (
	statePending jobState = iota + 1
	stateRunning
)

// job is the scheduler's record of a job.
type job struct {
	spec  Job
	leaf  *queue
	ten   *tenant
	m     int    // replicas per tensor-parallel group
	sc    scope  // how far the gang may spread
	pref  *scope // a narrower scope to try first (Preferred), or nil
	state jobState

	// running
	pl       *Placement
	model    int // GPU model index of its pool
	gpus     int
	started  time.Time // start of the current run
	end      int64     // expected end in Unix ns (started + runtime), when the spec has a runtime
	runSince time.Time // since when attained service accrues
	ckpt     time.Time // last checkpoint reported
	restored bool

	attained    float64   // GPU-seconds of earlier runs
	preemptedAt time.Time // last preemption (zero: never)
	wait        wait

	pidx, ridx, qidx int
	key              int64  // the order's sort key, set when the job joins the queue
	sid, psid        int32  // numbers of its full shape in its scope and its preferred one (Scheduler.shapeNo), 0 until it waits
	seen             uint64 // the last cycle that looked at it (or the cycle before it joined)
}

func (j *job) minReplicas() int {
	if j.spec.MinReplicas > 0 {
		return j.spec.MinReplicas
	}
	return j.spec.Replicas
}

func (j *job) elastic() bool { return j.spec.MinReplicas > 0 && j.spec.MinReplicas < j.spec.Replicas }

// attainedAt is the GPU-seconds the job has received by now.
func (j *job) attainedAt(now time.Time) float64 {
	a := j.attained
	if j.state == stateRunning && now.After(j.runSince) {
		a += float64(j.gpus) * now.Sub(j.runSince).Seconds()
	}
	return a
}

// lastCheckpoint is when the job last saved its state: the latest of its
// start, a reported checkpoint and the last tick of its checkpoint interval.
func (j *job) lastCheckpoint(now time.Time) time.Time {
	t := j.started
	if j.ckpt.After(t) {
		t = j.ckpt
	}
	if iv := j.spec.CheckpointInterval; iv > 0 && now.After(j.started) {
		if c := j.started.Add(now.Sub(j.started) / iv * iv); c.After(t) {
			t = c
		}
	}
	return t
}

// cost is what preempting the job now loses: GPUs times the work since its
// last checkpoint, in GPU-seconds.
func (j *job) cost(now time.Time) float64 {
	lost := now.Sub(j.lastCheckpoint(now))
	if lost < 0 {
		lost = 0
	}
	return float64(j.gpus) * lost.Seconds()
}

func (j *job) request(n int) request {
	return request{gpr: j.spec.GPUsPerReplica, n: n, m: j.m, model: j.spec.GPUModel, scope: j.sc,
		within: topology.NoDomain, node: -1}
}

func (j *job) shape(n int) shapeKey {
	return shapeKey{model: j.spec.GPUModel, gpr: int32(j.spec.GPUsPerReplica), n: int32(n), m: int32(j.m), sc: j.sc}
}

func placementGPUs(p *Placement) int {
	g := 0
	for _, a := range p.Nodes {
		g += bits.OnesCount64(a.GPUs)
	}
	return g
}

func clonePlacement(p *Placement) *Placement {
	if p == nil {
		return nil
	}
	c := *p
	c.Nodes = slices.Clone(p.Nodes)
	return &c
}

// list helpers: each job knows its index in the lists it is on.

func addTo(list *[]*job, j *job, idx *int) {
	*idx = len(*list)
	*list = append(*list, j)
}

func removeFrom(list *[]*job, j *job, idx func(*job) *int) {
	l := *list
	i := *idx(j)
	last := l[len(l)-1]
	l[i] = last
	*idx(last) = i
	l[len(l)-1] = nil
	*list = l[:len(l)-1]
}

func pidx(j *job) *int { return &j.pidx }
func ridx(j *job) *int { return &j.ridx }
func qidx(j *job) *int { return &j.qidx }
