package sched

import (
	"strings"

	"gpucloud/internal/topology"
)

// validate checks a job against the fabric and the queues and fills in its
// derived fields. Errors name the field as the API spells it.
func (s *Scheduler) validate(j *job) *RejectError {
	sp := &j.spec
	id := sp.ID
	if sp.Replicas < 1 {
		return reject(id, "spec.replicas", "must be at least 1, got %d", sp.Replicas)
	}
	if sp.GPUsPerReplica < 1 {
		return reject(id, "spec.gpusPerReplica", "must be at least 1, got %d", sp.GPUsPerReplica)
	}
	if sp.Replicas > 1<<24 {
		return reject(id, "spec.replicas", "%d replicas is more than any fabric holds", sp.Replicas)
	}
	maxNode, modelGPUs := 0, 0
	for i := range s.t.pools {
		if po := &s.t.pools[i]; sp.GPUModel == "" || po.model == sp.GPUModel {
			maxNode = max(maxNode, po.gpus)
			modelGPUs += po.gpus * po.nodes
		}
	}
	model := ""
	if sp.GPUModel != "" {
		model = sp.GPUModel + " "
	}
	if maxNode == 0 {
		return reject(id, "spec.gpuModel", "no %sGPUs in this fabric (it has %s)", model, strings.Join(s.t.models, ", "))
	}
	if sp.GPUsPerReplica > maxNode {
		return reject(id, "spec.gpusPerReplica", "%d GPUs per replica, but a replica runs on one node and the largest %snode has %d GPUs",
			sp.GPUsPerReplica, model, maxNode)
	}
	if g := sp.Replicas * sp.GPUsPerReplica; g > modelGPUs {
		return reject(id, "spec.replicas", "the job wants %d GPUs (%d replicas x %d), more than the %d %sGPUs of the fabric",
			g, sp.Replicas, sp.GPUsPerReplica, modelGPUs, model)
	}
	if sp.MinReplicas < 0 || sp.MinReplicas > sp.Replicas {
		return reject(id, "spec.minReplicas", "must be between 0 (not elastic) and replicas (%d), got %d", sp.Replicas, sp.MinReplicas)
	}
	if err := s.validateTP(j); err != nil {
		return err
	}
	if err := s.validateTopology(j, maxNode); err != nil {
		return err
	}
	if sp.Runtime < 0 {
		return reject(id, "spec.estimatedRuntime", "must be zero (unknown) or positive, got %v", sp.Runtime)
	}
	if sp.CheckpointInterval < 0 {
		return reject(id, "spec.checkpointInterval", "must be zero (never) or positive, got %v", sp.CheckpointInterval)
	}
	if sp.Queue == "" {
		sp.Queue = DefaultQueue
	}
	q := s.qt.byName[sp.Queue]
	switch {
	case q == nil && sp.Queue == DefaultQueue:
		return reject(id, "spec.queue", "required: there is no default queue (leaf queues: %s)", s.qt.leafNames())
	case q == nil:
		return reject(id, "spec.queue", "unknown queue %q (leaf queues: %s)", sp.Queue, s.qt.leafNames())
	case !q.leaf():
		return reject(id, "spec.queue", "%q is not a leaf queue; submit to one of its children", sp.Queue)
	}
	j.leaf = q
	j.ten = q.tenant(sp.Tenant, len(s.t.models))
	if err := s.quotaCheck(j); err != nil {
		return err
	}
	return nil
}

func (s *Scheduler) validateTP(j *job) *RejectError {
	sp := &j.spec
	j.m = 1
	tp := sp.TPSize
	switch {
	case tp < 0:
		return reject(sp.ID, "spec.tensorParallel", "must be zero or positive, got %d", tp)
	case tp <= 1:
		return nil
	case tp > s.t.maxNVLGPUs:
		return reject(sp.ID, "spec.tensorParallel", "a tensor-parallel group of %d GPUs is larger than any NVLink domain of the fabric (%d GPUs)", tp, s.t.maxNVLGPUs)
	case sp.GPUsPerReplica%tp == 0:
		return nil
	case tp%sp.GPUsPerReplica != 0:
		return reject(sp.ID, "spec.tensorParallel", "%d must divide gpusPerReplica (%d) or be a multiple of it", tp, sp.GPUsPerReplica)
	}
	j.m = tp / sp.GPUsPerReplica
	if sp.Replicas%j.m != 0 {
		return reject(sp.ID, "spec.replicas", "must be a multiple of %d: tensor-parallel groups of %d GPUs take %d replicas of %d", j.m, tp, j.m, sp.GPUsPerReplica)
	}
	if sp.MinReplicas%j.m != 0 {
		return reject(sp.ID, "spec.minReplicas", "must be a multiple of %d: tensor-parallel groups of %d GPUs take %d replicas of %d", j.m, tp, j.m, sp.GPUsPerReplica)
	}
	return nil
}

func validLevel(l topology.Level) bool { return l <= topology.LevelRegion }

func (s *Scheduler) validateTopology(j *job, maxNode int) *RejectError {
	sp := &j.spec
	if !validLevel(sp.Required) {
		return reject(sp.ID, "spec.topology.required", "unknown level %d", sp.Required)
	}
	if !validLevel(sp.Preferred) {
		return reject(sp.ID, "spec.topology.preferred", "unknown level %d", sp.Preferred)
	}
	top := s.t.levels[len(s.t.levels)-1]
	j.sc = scope{level: top}
	need := j.minReplicas() * sp.GPUsPerReplica
	switch r := sp.Required; {
	case r == topology.LevelGPU: // not set
	case r == topology.LevelNode:
		j.sc.node = true
		if need > maxNode {
			return reject(sp.ID, "spec.topology.required", "one node holds at most %d GPUs; the job needs %d", maxNode, need)
		}
	case r == topology.LevelNVLink:
		j.sc.nvlink = true
		if need > s.t.maxNVLGPUs {
			return reject(sp.ID, "spec.topology.required", "one NVLink domain holds at most %d GPUs; the job needs %d", s.t.maxNVLGPUs, need)
		}
	default:
		j.sc.level = s.t.effectiveLevel(r)
		if most := s.mostReplicasIn(j.sc.level, j); most < j.minReplicas() {
			return reject(sp.ID, "spec.topology.required", "one %s holds at most %d replicas of %d GPUs; the job needs %d",
				j.sc.level, most, sp.GPUsPerReplica, j.minReplicas())
		}
	}
	// Preferred is tried first when it is narrower than what is required.
	switch pf := sp.Preferred; {
	case pf == topology.LevelGPU || j.sc.node:
	case pf == topology.LevelNode:
		j.pref = &scope{node: true, level: j.sc.level}
	case pf == topology.LevelNVLink:
		if !j.sc.nvlink {
			j.pref = &scope{nvlink: true, level: j.sc.level}
		}
	default:
		if l := s.t.effectiveLevel(pf); !j.sc.nvlink && l < j.sc.level {
			j.pref = &scope{level: l}
		}
	}
	return nil
}

// mostReplicasIn is the most replicas of j one domain of level l holds on
// an empty fabric.
func (s *Scheduler) mostReplicasIn(l topology.Level, j *job) int {
	best := 0
	for p, n := range s.t.maxNodesAt[l] {
		po := &s.t.pools[p]
		if (j.spec.GPUModel != "" && po.model != j.spec.GPUModel) || po.gpus < j.spec.GPUsPerReplica {
			continue
		}
		best = max(best, n*(po.gpus/j.spec.GPUsPerReplica)/j.m*j.m)
	}
	return best
}

// quotaCheck refuses a job its queue can never admit.
func (s *Scheduler) quotaCheck(j *job) *RejectError {
	need := int64(j.minReplicas() * j.spec.GPUsPerReplica)
	for a := j.leaf; a != nil; a = a.parent {
		if a.limit >= 0 && need > a.limit {
			return reject(j.spec.ID, "spec.queue", "the job needs %d GPUs but queue %q may use at most %d (guaranteed %d + borrowing limit %d)",
				need, a.spec.Name, a.limit, a.guaranteed, a.spec.BorrowLimit)
		}
		if !j.spec.Preemptible && need > a.guaranteed {
			return reject(j.spec.ID, "spec.preemptible", "a non-preemptible job runs only within guaranteed quota: queue %q is guaranteed %d GPUs, the job needs %d",
				a.spec.Name, a.guaranteed, need)
		}
	}
	return nil
}
