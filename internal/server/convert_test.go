package server

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"gpucloud/internal/api"
	"gpucloud/internal/sched"
	"gpucloud/internal/topology"
)

func queue(name, parent string, quota int) *api.Queue {
	return &api.Queue{Metadata: api.ObjectMeta{Name: name}, Spec: api.QueueSpec{Parent: parent, Quota: quota}}
}

// Quotas written for a bigger fabric are scaled down to the one at hand,
// children with their parents, so the scheduler takes the tree.
func TestSchedQueuesScaleChildrenWithParents(t *testing.T) {
	f, err := topology.Generate("ndv5", 64)
	if err != nil {
		t.Fatal(err)
	}
	total := f.NumGPUs()
	rem := queue("rest", "", 0)
	rem.Spec.QuotaRemainder = true
	tests := []struct {
		name string
		qs   []*api.Queue
		want map[string]int
	}{{
		name: "children at their parent's quota",
		qs:   []*api.Queue{queue("a", "", 2*total), queue("a1", "a", total+total/2), queue("a1x", "a1", total+total/2), queue("a2", "a", total/2), queue("b", "", 2*total)},
		want: map[string]int{"a": total / 2, "a1": total * 3 / 8, "a1x": total * 3 / 8, "a2": total / 8, "b": total / 2},
	}, {
		name: "fits already",
		qs:   []*api.Queue{queue("a", "", total/2), queue("a1", "a", total/4)},
		want: map[string]int{"a": total / 2, "a1": total / 4},
	}, {
		name: "children of the remainder queue",
		qs:   []*api.Queue{queue("a", "", total*3/4), rem, queue("r1", "rest", total/2), queue("r2", "rest", total/2)},
		want: map[string]int{"a": total * 3 / 4, "rest": total / 4, "r1": total / 8, "r2": total / 8},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sqs, _ := schedQueues(tc.qs, total)
			got := map[string]int{}
			for _, q := range sqs {
				got[q.Name] = q.Guaranteed
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("guarantees (-want +got):\n%s", d)
			}
			if err := sched.New(f, sched.DefaultConfig()).SetQueues(sqs); err != nil {
				t.Errorf("the scheduler refuses the scaled tree: %v", err)
			}
		})
	}
}
