// Package sched is the gpucloud scheduler: a pure, deterministic state
// machine. The caller feeds it what happened (jobs submitted, finished,
// cancelled; nodes failed or repaired; checkpoints taken) and asks it to
// Schedule at a given time; it answers with decisions (place, preempt,
// requeue, shrink, grow, reject) that it has already applied to its own
// snapshot. It does no I/O, reads no clock, starts no goroutine and keeps no
// global state, so the control plane and the simulator get the same
// decisions from the same inputs, byte for byte.
//
// This file is the contract the server and the simulator rely on.
package sched

import (
	"time"

	"gpucloud/internal/topology"
)

// Job is a gang: Replicas members of GPUsPerReplica GPUs each, placed all at
// once or not at all.
type Job struct {
	ID     string
	Tenant string
	Queue  string // a leaf queue

	Replicas       int
	GPUsPerReplica int // a replica is a whole node (GPUsPerReplica = GPUs per node) or part of one
	// MinReplicas > 0 makes the job elastic: it may run, or keep running
	// after a failure, with as few as MinReplicas replicas.
	MinReplicas int
	// TPSize is the tensor-parallel group size: each group of TPSize GPUs
	// must sit inside one NVLink domain. 0 or 1 means no constraint.
	TPSize int
	// Required, when set (LevelLeaf, LevelBlock, ...), puts the whole gang
	// inside one domain of that level; Preferred asks for it when possible.
	Required  topology.Level
	Preferred topology.Level
	GPUModel  string // empty: any

	Priority    int32
	Preemptible bool
	// Runtime is the user's estimate (0: unknown). Backfill uses it.
	Runtime time.Duration
	// CheckpointInterval is how often the job checkpoints (0: never), for
	// the cost of preempting it.
	CheckpointInterval time.Duration
	Submitted          time.Time
}

// GPUs is the size of the full gang.
func (j *Job) GPUs() int { return j.Replicas * j.GPUsPerReplica }

// NodeAlloc is the GPUs a job holds on one node.
type NodeAlloc struct {
	Node topology.NodeID
	GPUs uint64 // bitmask of GPU indices on the node
}

// Placement is where a job runs. Nodes are sorted by NodeID. Replica r
// runs on the r-th run of GPUsPerReplica GPUs counted across Nodes in
// order, GPU indices ascending within a node; a replica never spans nodes,
// and consecutive replicas form the tensor-parallel groups.
type Placement struct {
	Nodes    []NodeAlloc
	Replicas int // replicas placed (less than Job.Replicas when shrunk)
	// Leaves is the number of leaf domains spanned; MinLeaves the fewest
	// that could hold this many GPUs on an empty fabric.
	Leaves    int
	MinLeaves int
}

// DecisionKind says what a decision does.
type DecisionKind uint8

const (
	Place   DecisionKind = iota + 1 // start Job on Placement
	Preempt                         // stop Job (it goes back to its queue); By names the job it makes room for
	Requeue                         // Job lost its placement (node failure) and waits again
	Shrink                          // elastic Job keeps running on the smaller Placement
	Grow                            // elastic Job gets more replicas: the new Placement
	Reject                          // Job can never run; Reason says why
)

// Decision is one outcome of a scheduling cycle or event.
type Decision struct {
	Kind      DecisionKind
	Job       string
	Placement *Placement // for Place, Shrink, Grow
	By        string     // for Preempt
	Reason    string
}

// Queue is a node of the queue tree (organisation > team). Quotas are in
// GPUs.
type Queue struct {
	Name   string
	Parent string // "" for a top-level queue
	// Guaranteed GPUs the queue can always get (by reclaiming what others
	// borrowed). BorrowLimit caps how far above Guaranteed it may go on idle
	// capacity (-1: no limit). Weight shares idle capacity.
	Guaranteed  int
	BorrowLimit int
	Weight      float64
}
