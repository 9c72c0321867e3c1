package sched

import (
	"testing"
	"time"

	"gpucloud/internal/topology"
)

// FuzzSubmit feeds arbitrary jobs and events: the scheduler refuses or
// queues them, never panics, and its invariants hold.
//
//	go test ./internal/sched -run XXX -fuzz FuzzSubmit -fuzztime 60s
func FuzzSubmit(f *testing.F) {
	f.Add(2, 8, 0, 0, uint8(0), uint8(0), int32(0), true, int64(0), int64(0), "q", uint8(3))
	f.Add(3, 4, 2, 8, uint8(3), uint8(4), int32(5), false, int64(time.Hour), int64(time.Minute), "", uint8(1))
	f.Add(0, 0, -1, -1, uint8(200), uint8(1), int32(-1), true, int64(-1), int64(-5), "nope", uint8(250))
	f.Add(1<<30, 1<<30, 1<<30, 1<<30, uint8(2), uint8(2), int32(1<<30), true, int64(1<<62), int64(1<<62), "t", uint8(7))
	f.Fuzz(func(t *testing.T, reps, gpr, minR, tp int, req, pref uint8, prio int32, preempt bool, rt, ck int64, queue string, ev uint8) {
		fb := fab{leaves: 2, nodes: 2, gpus: 4, nvlink: 2}.build(t)
		s := New(fb, DefaultConfig())
		if queue != "" {
			_ = s.SetQueues([]Queue{{Name: "q", Guaranteed: 8, BorrowLimit: 4}, {Name: queue, Guaranteed: 4, BorrowLimit: -1}})
		}
		for i, id := range []string{"a", "b", "c"} {
			j := Job{ID: id, Queue: queue, Replicas: reps + i, GPUsPerReplica: gpr, MinReplicas: minR, TPSize: tp,
				Required: topology.Level(req), Preferred: topology.Level(pref), Priority: prio + int32(i), Preemptible: preempt,
				Runtime: time.Duration(rt), CheckpointInterval: time.Duration(ck), Submitted: t0}
			err := s.Submit(j)
			if _, queued := s.Job(id); (err == nil) != queued {
				t.Fatalf("Submit returned %v but queued=%v", err, queued)
			}
		}
		now := t0
		for k := range 6 {
			now = now.Add(time.Duration(ev) * time.Minute)
			n := topology.NodeID(int(ev>>uint(k%4)) % (len(fb.Nodes) + 2))
			switch (int(ev) + k) % 4 {
			case 0:
				s.NodeDown(n, now)
			case 1:
				s.NodeUp(n, now)
			case 2:
				for _, id := range s.Running() {
					_ = s.Finish(id, now)
					break
				}
			}
			s.Schedule(now)
			if err := s.Check(); err != nil {
				t.Fatal(err)
			}
		}
	})
}
