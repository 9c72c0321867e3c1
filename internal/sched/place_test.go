package sched

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"gpucloud/internal/topology"
)

// Two blocks of two leaves of four 8-GPU nodes: n00-n03 | n04-n07 || n08-n11 | n12-n15.
var twoBlocks = fab{blocks: 2, leaves: 2, nodes: 4, gpus: 8}

func TestPlacement(t *testing.T) {
	fifo := Config{Policy: PolicyFIFO}
	runScenarios(t, []scenario{{
		name: "small jobs pack onto the partly used node, aligned to their half of the board",
		fab:  twoBlocks, cfg: fifo,
		steps: []step{{
			submit: []Job{jb("a").obj(), jb("b").gang(1, 2).at(1).obj(), jb("c").gang(1, 4).at(2).obj(), jb("d").at(3).obj(), jb("e").gang(1, 8).at(4).obj()},
			want: []dec{
				place("a", 1, "n00:0"), place("b", 1, "n00:2-3"), place("c", 1, "n00:4-7"), place("d", 1, "n00:1"),
				// The next whole node comes from the fullest leaf of the fullest block.
				place("e", 1, "n01:0-7"),
			},
		}},
	}, {
		name: "a gang goes to the best-fitting leaf; a single node to the fullest leaf",
		fab:  twoBlocks, cfg: fifo,
		running: []restored{{jb("x").gang(3, 8).obj(), "n00:0-7 n01:0-7 n02:0-7", -1}},
		steps: []step{{
			submit: []Job{jb("g2").gang(2, 8).obj(), jb("g1").gang(1, 8).at(1).obj()},
			want:   []dec{place("g2", 2, "n04:0-7 n05:0-7"), place("g1", 1, "n03:0-7")},
		}},
	}, {
		name: "a gang spans the fewest leaves inside one block, best fit for the remainder",
		fab:  twoBlocks, cfg: fifo,
		running: []restored{{jb("x").gang(3, 8).obj(), "n00:0-7 n01:0-7 n02:0-7", -1}, {jb("y").gang(2, 8).obj(), "n04:0-7 n05:0-7", -1}},
		steps: []step{{
			submit: []Job{jb("g").gang(6, 8).obj()},
			want:   []dec{place("g", 6, "n08:0-7 n09:0-7 n10:0-7 n11:0-7 n12:0-7 n13:0-7")},
		}},
	}, {
		name: "required leaf waits instead of spanning; the same gang unconstrained spans two leaves",
		fab:  fab{leaves: 2, nodes: 4, gpus: 8}, cfg: Config{Policy: PolicyDRF},
		running: []restored{{jb("x").gang(2, 8).obj(), "n00:0-7 n04:0-7", -1}},
		steps: []step{{
			submit:  []Job{jb("leaf").gang(4, 8).required(topology.LevelLeaf).obj(), jb("any").gang(4, 8).at(1).obj()},
			want:    []dec{place("any", 4, "n01:0-7 n02:0-7 n03:0-7 n05:0-7")},
			reasons: map[string]string{"leaf": "needs 4 idle nodes in one leaf; the most in one leaf: 3 (leaf-0)"},
		}},
	}, {
		name: "tensor-parallel groups stay inside NVLink domains",
		// 2 leaves of 4 nodes of 4 GPUs; racks of 2 nodes: {n00,n01} {n02,n03} | {n04,n05} {n06,n07}
		fab: fab{leaves: 2, nodes: 4, gpus: 4, nvlink: 2}, cfg: fifo,
		running: []restored{{jb("x").obj(), "n01:0", -1}},
		steps: []step{{
			submit: []Job{
				jb("tp8").gang(4, 4).tp(8).obj(),        // two racks: leaf-0 has only one whole rack left
				jb("rack").gang(2, 2).tp(4).at(1).obj(), // one 4-GPU group: fits on n00 with one NVLink domain
				jb("tp8b").gang(4, 2).tp(8).at(2).obj(), // one 8-GPU group over a rack: n02+n03
			},
			want: []dec{
				place("tp8", 4, "n04:0-3 n05:0-3 n06:0-3 n07:0-3"),
				place("rack", 2, "n00:0-3"),
				place("tp8b", 4, "n02:0-3 n03:0-3"),
			},
		}},
	}, {
		name: "spread puts single jobs on the emptiest node of the emptiest block",
		fab:  twoBlocks, cfg: Config{Policy: PolicyFIFO, Spread: true},
		steps: []step{{
			submit: []Job{jb("a").obj(), jb("b").at(1).obj(), jb("c").at(2).obj()},
			want:   []dec{place("a", 1, "n00:0"), place("b", 1, "n08:0"), place("c", 1, "n04:0")},
		}},
	}, {
		name: "fewest leaves wins over the lowest level, unless a level is preferred",
		// block-0: leaves with 2+2 idle nodes; block-1: one leaf with 4 idle, one full.
		fab: twoBlocks, cfg: fifo,
		running: []restored{{jb("x").gang(8, 8).obj(), "n00:0-7 n01:0-7 n04:0-7 n05:0-7 n08:0-7 n09:0-7 n10:0-7 n11:0-7", -1}},
		steps: []step{{
			submit: []Job{jb("wide").gang(5, 8).obj()},
			want:   []dec{place("wide", 5, "n02:0-7 n12:0-7 n13:0-7 n14:0-7 n15:0-7")},
		}, {
			finish: []string{"wide"},
			submit: []Job{jb("blk").gang(4, 8).preferred(topology.LevelBlock).obj(), jb("blk5").gang(6, 8).min(4).preferred(topology.LevelBlock).at(1).obj()},
			want: []dec{
				place("blk", 4, "n12:0-7 n13:0-7 n14:0-7 n15:0-7"),
				place("blk5", 4, "n02:0-7 n03:0-7 n06:0-7 n07:0-7"),
			},
		}},
	}})
}

func TestLocalityFields(t *testing.T) {
	f := fab{blocks: 2, leaves: 4, nodes: 4, gpus: 8}.build(t)
	s := New(f, Config{Policy: PolicyFIFO})
	jobs := []Job{jb("one").gang(1, 2).obj(), jb("leaf").gang(4, 8).at(1).obj(), jb("three").gang(9, 8).at(2).obj(), jb("slots").gang(12, 4).at(3).obj()}
	for _, j := range jobs {
		if err := s.Submit(j); err != nil {
			t.Fatal(err)
		}
	}
	s.Schedule(t0)
	type loc struct{ Leaves, MinLeaves int }
	got := map[string]loc{}
	for _, j := range jobs {
		p, ok := s.JobPlacement(j.ID)
		if !ok {
			t.Fatalf("%s not placed: %s", j.ID, s.PendingReason(j.ID))
		}
		got[j.ID] = loc{p.Leaves, p.MinLeaves}
	}
	want := map[string]loc{"one": {1, 1}, "leaf": {1, 1}, "three": {3, 3}, "slots": {2, 2}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("locality (-want +got):\n%s", d)
	}
}
