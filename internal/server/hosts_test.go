package server

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"gpucloud/internal/api"
)

// Every node of a gang gets the gang's hosts in node-rank order, with the
// address each registered and its GPUs in the job: the hostfile of
// DeepSpeed and MPI.
func TestAssignmentsListTheGangsHosts(t *testing.T) {
	ts := startServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	addr := map[string]string{"n1": "10.0.0.1", "n2": "10.0.0.2"}
	for name, a := range addr {
		reg := registration(name, 2)
		reg.Address = a
		if _, err := ts.admin.Register(ctx, reg); err != nil {
			t.Fatal(err)
		}
	}
	j, err := ts.admin.Submit(ctx, testJob("gang", 4, 1))
	if err != nil {
		t.Fatal(err)
	}
	waitPhase(t, ts.admin, j.Metadata.ID, api.PhaseRunning, 10*time.Second)
	for name := range addr {
		var got api.Assignment
		sctx, stop := context.WithCancel(ctx)
		ts.admin.WatchAssignments(sctx, name, func(set api.AssignmentSet) error {
			if len(set.Assignments) == 1 {
				got = set.Assignments[0]
				stop()
			}
			return nil
		})
		stop()
		if got.Job != j.Metadata.ID {
			t.Fatalf("node %s: no assignment of job %s", name, j.Metadata.ID)
		}
		if len(got.Hosts) != 2 || got.Hosts[got.NodeRank].Node != name {
			t.Fatalf("node %s (node rank %d): hosts %+v", name, got.NodeRank, got.Hosts)
		}
		var want []api.AssignmentHost
		for _, h := range got.Hosts {
			want = append(want, api.AssignmentHost{Node: h.Node, Address: addr[h.Node], Slots: 2})
		}
		if d := cmp.Diff(want, got.Hosts); d != "" {
			t.Errorf("node %s hosts (-want +got):\n%s", name, d)
		}
		if got.MasterAddr != got.Hosts[0].Address {
			t.Errorf("master %s is not node rank 0's address %s", got.MasterAddr, got.Hosts[0].Address)
		}
	}
}
