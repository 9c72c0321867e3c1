package agent

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"gpucloud/internal/agent/launch"
	"gpucloud/internal/api"
)

// A multi-node gang's hostfile lists the nodes the server sends, in
// node-rank order, with their slots.
func TestHostsOfMultiNodeGang(t *testing.T) {
	a := &Agent{cfg: Config{Address: "10.0.0.7"}}
	as := api.Assignment{Nodes: 3, NodeRank: 1, Processes: []api.Process{{Rank: 8, GPUs: []int{0, 1, 2, 3, 4, 5, 6, 7}}},
		Hosts: []api.AssignmentHost{{Node: "a", Address: "10.0.0.5", Slots: 8}, {Node: "b", Address: "10.0.0.7", Slots: 8}, {Node: "c", Slots: 4}}}
	want := []launch.Host{{Name: "10.0.0.5", Slots: 8}, {Name: "10.0.0.7", Slots: 8}, {Name: "c", Slots: 4}}
	if d := cmp.Diff(want, a.hosts(as)); d != "" {
		t.Errorf("hosts (-want +got):\n%s", d)
	}
}
