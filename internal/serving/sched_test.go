package serving

import (
	"fmt"
	"testing"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/sched"
	"gpucloud/internal/topology"
)

// schedJob is the scheduler's view of a job, as the server converts it
// (internal/server/convert.go).
func schedJob(j *api.Job, submitted time.Time) sched.Job {
	return sched.Job{
		ID: j.Metadata.ID, Tenant: j.Metadata.Tenant, Queue: j.Spec.Queue,
		Replicas: j.Spec.Replicas, GPUsPerReplica: j.Spec.GPUsPerReplica, TPSize: j.Spec.TensorParallel,
		GPUModel: j.Spec.GPUModel, Priority: j.Spec.Priority, Preemptible: j.Spec.Preemptible,
		Submitted: submitted,
	}
}

// The jobs a deployment's replicas become take GPUs back from training
// that borrowed them, through the scheduler's own rules (reclaim of
// guaranteed quota), and training gets them again when the replicas go.
func TestReplicaJobsReclaimTrainingGPUs(t *testing.T) {
	f, err := topology.Generate("ndv4", 16) // 2 nodes of 8 GPUs
	if err != nil {
		t.Fatal(err)
	}
	s := sched.New(f, sched.DefaultConfig())
	if err := s.SetQueues([]sched.Queue{
		{Name: "training", Guaranteed: 8, BorrowLimit: -1, Weight: 1},
		{Name: "serving", Guaranteed: 8, BorrowLimit: -1, Weight: 1},
	}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// Two 8-GPU training jobs: the training queue's quota, and serving's
	// idle GPUs borrowed.
	for _, id := range []string{"train-a", "train-b"} {
		if err := s.Submit(sched.Job{ID: id, Tenant: "research", Queue: "training", Replicas: 1, GPUsPerReplica: 8, Preemptible: true, Submitted: t0}); err != nil {
			t.Fatal(err)
		}
	}
	placed := func(ds []sched.Decision, kind sched.DecisionKind) []string {
		var out []string
		for _, d := range ds {
			if d.Kind == kind {
				out = append(out, d.Job)
			}
		}
		return out
	}
	if got := placed(s.Schedule(t0), sched.Place); len(got) != 2 {
		t.Fatalf("training placed: %v", got)
	}

	// Load rises: the deployment asks for 4 replicas of 2 GPUs.
	t1 := t0.Add(time.Hour)
	tmpl := Template{Command: []string{"vllm"}, Queue: "serving", GPUs: 2, Priority: 100}
	var replicas []string
	for i := range 4 {
		id := fmt.Sprintf("chat-%d", i)
		j := ReplicaJob(id, ReplicaSpec{Deployment: "chat", Tenant: "acme", Revision: tmpl.Revision(), Template: tmpl})
		api.DefaultJob(j)
		if err := api.ValidateJob(j); err != nil {
			t.Fatal(err)
		}
		if err := s.Submit(schedJob(j, t1)); err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, id)
	}
	ds := s.Schedule(t1)
	// Which of the two goes is the scheduler's choice (same cost); one
	// must, since the training queue holds twice its guarantee.
	victims := placed(ds, sched.Preempt)
	if len(victims) != 1 {
		t.Fatalf("preempted %v, want one training job; decisions %+v", victims, ds)
	}
	victim, kept := victims[0], map[string]string{"train-a": "train-b", "train-b": "train-a"}[victims[0]]
	if got := placed(ds, sched.Place); len(got) != 4 {
		t.Fatalf("replicas placed %v; decisions %+v", got, ds)
	}
	for _, id := range replicas {
		p, ok := s.JobPlacement(id)
		if !ok || len(p.Nodes) != 1 {
			t.Fatalf("replica %s placement %+v: a replica's GPUs must share a node (one NVLink domain)", id, p)
		}
	}
	if _, ok := s.JobPlacement(kept); !ok {
		t.Fatalf("%s, within the training quota, does not run", kept)
	}

	// Load falls: the replicas are drained and stopped; training gets the
	// GPUs back.
	t2 := t1.Add(time.Hour)
	for _, id := range replicas {
		if err := s.Finish(id, t2); err != nil {
			t.Fatal(err)
		}
	}
	if got := placed(s.Schedule(t2), sched.Place); len(got) != 1 || got[0] != victim {
		t.Fatalf("after the replicas left, placed %v, want %s", got, victim)
	}
}
