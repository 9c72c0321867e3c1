package sched

import (
	"errors"
	"strings"
	"testing"

	"gpucloud/internal/topology"
)

func TestSubmitRejectsBadInput(t *testing.T) {
	// 2 leaves x 4 nodes x 8 GPUs = 64 GPUs; NVLink domains are single nodes.
	f := fab{leaves: 2, nodes: 4, gpus: 8}.build(t)
	queues := []Queue{
		{Name: "org", Guaranteed: 32, BorrowLimit: -1},
		{Name: "team", Parent: "org", Guaranteed: 16, BorrowLimit: 8},
	}
	tests := []struct {
		name  string
		job   Job
		field string
		words string
	}{
		{"no id", jb("").obj(), "metadata.name", "needs an id"},
		{"duplicate id", jb("dup").queue("team").obj(), "metadata.name", "already exists"},
		{"zero replicas", jb("a").gang(0, 8).queue("team").obj(), "spec.replicas", "at least 1"},
		{"negative gpus", jb("a").gang(1, -2).queue("team").obj(), "spec.gpusPerReplica", "at least 1"},
		{"more GPUs than exist", jb("a").gang(9, 8).queue("team").obj(), "spec.replicas", "more than the 64"},
		{"replica bigger than a node", jb("a").gang(1, 16).queue("team").obj(), "spec.gpusPerReplica", "largest node has 8"},
		{"TP group larger than an NVLink domain", jb("a").gang(2, 8).tp(16).queue("team").obj(), "spec.tensorParallel", "larger than any NVLink domain of the fabric (8 GPUs)"},
		{"TP group not aligned", jb("a").gang(2, 4).tp(3).queue("team").obj(), "spec.tensorParallel", "must divide"},
		{"TP group spans replicas unevenly", jb("a").gang(3, 2).tp(4).queue("team").obj(), "spec.replicas", "multiple of 2"},
		{"negative TP", jb("a").tp(-1).queue("team").obj(), "spec.tensorParallel", "zero or positive"},
		{"minReplicas above replicas", jb("a").gang(2, 8).min(3).queue("team").obj(), "spec.minReplicas", "between 0"},
		{"required leaf too small", jb("a").gang(5, 8).required(topology.LevelLeaf).queue("team").obj(), "spec.topology.required", "one leaf holds at most 4"},
		{"required node too small", jb("a").gang(2, 8).required(topology.LevelNode).queue("team").obj(), "spec.topology.required", "one node holds at most 8"},
		{"unknown level", jb("a").required(topology.Level(42)).queue("team").obj(), "spec.topology.required", "unknown level"},
		{"unknown GPU model", jb("a").model("B200").queue("team").obj(), "spec.gpuModel", "no B200 GPUs"},
		{"unknown queue", jb("a").queue("nope").obj(), "spec.queue", `unknown queue "nope" (leaf queues: team)`},
		{"no queue and no default", jb("a").obj(), "spec.queue", "no default queue"},
		{"parent queue", jb("a").queue("org").obj(), "spec.queue", "not a leaf queue"},
		{"above the queue's limit", jb("a").gang(4, 8).queue("team").obj(), "spec.queue", "may use at most 24"},
		{"non-preemptible above guarantee", jb("a").gang(3, 8).fixed().queue("team").obj(), "spec.preemptible", "guaranteed 16 GPUs"},
		{"negative runtime", jb("a").runtime(-1).queue("team").obj(), "spec.estimatedRuntime", "zero (unknown) or positive"},
		{"negative checkpoint interval", jb("a").ckpt(-1).queue("team").obj(), "spec.checkpointInterval", "zero (never)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(f, DefaultConfig())
			if err := s.SetQueues(queues); err != nil {
				t.Fatal(err)
			}
			if err := s.Submit(jb("dup").queue("team").obj()); err != nil {
				t.Fatal(err)
			}
			err := s.Submit(tc.job)
			var re *RejectError
			if !errors.As(err, &re) {
				t.Fatalf("Submit: got %v, want a *RejectError", err)
			}
			if re.Field != tc.field || !strings.Contains(re.Reason, tc.words) {
				t.Errorf("got field %q reason %q; want field %q with %q", re.Field, re.Reason, tc.field, tc.words)
			}
			if got := s.Pending(); len(got) != 1 {
				t.Errorf("pending after a rejected submit: %v, want only dup", got)
			}
			// A rejected job never blocks the queue: the next valid job runs.
			if err := s.Submit(jb("ok").queue("team").obj()); err != nil {
				t.Fatal(err)
			}
			if ds := s.Schedule(t0); len(ds) != 2 {
				t.Errorf("decisions after a rejected submit: %v, want dup and ok placed", ds)
			}
		})
	}
}

func TestSetQueuesRejectsBadTrees(t *testing.T) {
	f := fab{leaves: 2, nodes: 4, gpus: 8}.build(t)
	tests := []struct {
		name   string
		queues []Queue
		field  string
		words  string
	}{
		{"no name", []Queue{{Guaranteed: 1}}, "queues[0].name", "needs a name"},
		{"twice", []Queue{{Name: "a"}, {Name: "a"}}, "queues[1](a).name", "defined twice"},
		{"unknown parent", []Queue{{Name: "a", Parent: "x"}}, "queues[0](a).parent", `unknown queue "x"`},
		{"cycle", []Queue{{Name: "a", Parent: "b"}, {Name: "b", Parent: "a"}}, "queues(a).parent", "its own ancestor"},
		{"negative guarantee", []Queue{{Name: "a", Guaranteed: -1}}, "queues[0](a).guaranteed", "zero or more"},
		{"bad borrow limit", []Queue{{Name: "a", BorrowLimit: -2}}, "queues[0](a).borrowLimit", "-1 (no limit)"},
		{"children above parent", []Queue{{Name: "o", Guaranteed: 8}, {Name: "a", Parent: "o", Guaranteed: 8}, {Name: "b", Parent: "o", Guaranteed: 8}},
			"queues(o).guaranteed", "children are guaranteed 16"},
		{"more than the fabric", []Queue{{Name: "a", Guaranteed: 40}, {Name: "b", Guaranteed: 40}}, "queues.guaranteed", "the fabric has 64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(f, DefaultConfig())
			err := s.SetQueues(tc.queues)
			var re *RejectError
			if !errors.As(err, &re) {
				t.Fatalf("got %v, want a *RejectError", err)
			}
			if re.Field != tc.field || !strings.Contains(re.Reason, tc.words) {
				t.Errorf("got field %q reason %q; want field %q with %q", re.Field, re.Reason, tc.field, tc.words)
			}
			// The old tree (the default queue) is still in force.
			if err := s.Submit(jb("a").obj()); err != nil {
				t.Errorf("default queue lost after a refused SetQueues: %v", err)
			}
		})
	}
}

func TestSetQueuesKeepsJobsInTheirQueues(t *testing.T) {
	f := fab{leaves: 1, nodes: 2, gpus: 8}.build(t)
	s := New(f, DefaultConfig())
	if err := s.SetQueues([]Queue{{Name: "a", Guaranteed: 16}, {Name: "b", Guaranteed: 0, BorrowLimit: -1}}); err != nil {
		t.Fatal(err)
	}
	for _, j := range []Job{jb("x").queue("a").obj(), jb("big").gang(1, 8).queue("b").obj()} {
		if err := s.Submit(j); err != nil {
			t.Fatal(err)
		}
	}
	// Dropping queue a while job x waits in it is refused.
	if err := s.SetQueues([]Queue{{Name: "b", Guaranteed: 16}}); err == nil || !strings.Contains(err.Error(), `job "x" is in queue "a"`) {
		t.Fatalf("got %v, want a refusal naming job x", err)
	}
	// Tightening b's limit below what big needs rejects big at the next
	// cycle and leaves x alone.
	if err := s.SetQueues([]Queue{{Name: "a", Guaranteed: 16}, {Name: "b", BorrowLimit: 4}}); err != nil {
		t.Fatal(err)
	}
	ds := s.Schedule(t0)
	if len(ds) != 2 || ds[0].Kind != Reject || ds[0].Job != "big" || !strings.Contains(ds[0].Reason, "may use at most 4") || ds[1].Job != "x" {
		t.Errorf("got %+v, want big rejected then x placed", ds)
	}
}
