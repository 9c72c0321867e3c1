package sched

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"gpucloud/internal/topology"
)

// Two leaves of two 8-GPU nodes: n00 n01 | n02 n03.
var four = fab{leaves: 2, nodes: 2, gpus: 8}

const (
	min_ = time.Minute
	hour = time.Hour
)

func TestQuotaAndFairShare(t *testing.T) {
	runScenarios(t, []scenario{{
		name:   "the borrowing limit caps a queue even on an idle fabric",
		fab:    four,
		cfg:    DefaultConfig(),
		queues: []Queue{{Name: "a", Guaranteed: 16}, {Name: "b", Guaranteed: 16, BorrowLimit: -1}},
		steps: []step{{
			submit:  []Job{jb("a1").gang(2, 8).queue("a").obj(), jb("a2").gang(1, 8).queue("a").at(1).obj()},
			want:    []dec{place("a1", 2, "n00:0-7 n01:0-7")},
			reasons: map[string]string{"a2": "queue a is at its limit: it uses 16 of at most 16 GPUs"},
		}},
	}, {
		name:   "idle guarantee is lent and reclaimed, cheapest borrower first",
		fab:    four,
		cfg:    DefaultConfig(),
		queues: []Queue{{Name: "a", Guaranteed: 16, BorrowLimit: -1}, {Name: "b", Guaranteed: 16, BorrowLimit: -1}},
		steps: []step{{
			submit: []Job{
				jb("a1").gang(2, 8).queue("a").ckpt(10 * min_).obj(), // checkpoints: cheap to preempt at 10 min
				jb("a2").gang(2, 8).queue("a").at(1).obj(),
			},
			want: []dec{place("a1", 2, "n00:0-7 n01:0-7"), place("a2", 2, "n02:0-7 n03:0-7")},
		}, {
			at:     10 * min_,
			submit: []Job{jb("b1").gang(2, 8).queue("b").prio(-5).obj()}, // priority does not matter for reclaim
			want:   []dec{preempt("a1", "b1"), place("b1", 2, "n00:0-7 n01:0-7")},
		}, {
			at:      11 * min_,
			want:    nil,
			reasons: map[string]string{"a1": "first in line"},
		}},
	}, {
		name:   "idle capacity is shared by weight",
		fab:    four,
		cfg:    Config{Policy: PolicyDRF},
		queues: []Queue{{Name: "a", BorrowLimit: -1, Weight: 1}, {Name: "b", BorrowLimit: -1, Weight: 3}},
		steps: []step{{
			submit: []Job{
				jb("a0").gang(1, 8).queue("a").obj(), jb("a1").gang(1, 8).queue("a").obj(), jb("a2").gang(1, 8).queue("a").obj(),
				jb("b0").gang(1, 8).queue("b").at(1).obj(), jb("b1").gang(1, 8).queue("b").at(1).obj(), jb("b2").gang(1, 8).queue("b").at(1).obj(),
			},
			want: []dec{place("a0", 1, "n00:0-7"), place("b0", 1, "n01:0-7"), place("b1", 1, "n02:0-7"), place("b2", 1, "n03:0-7")},
		}},
	}, {
		name: "tenants of one queue share it by dominant share, not by arrival",
		fab:  four,
		cfg:  Config{Policy: PolicyDRF},
		steps: []step{{
			submit: []Job{
				jb("x0").gang(1, 8).tenant("x").obj(), jb("x1").gang(1, 8).tenant("x").at(1).obj(), jb("x2").gang(1, 8).tenant("x").at(2).obj(),
				jb("y0").gang(1, 8).tenant("y").at(3).obj(), jb("y1").gang(1, 8).tenant("y").at(4).obj(), jb("y2").gang(1, 8).tenant("y").at(5).obj(),
			},
			want: []dec{place("x0", 1, "n00:0-7"), place("y0", 1, "n01:0-7"), place("x1", 1, "n02:0-7"), place("y1", 1, "n03:0-7")},
		}},
	}, {
		name: "guaranteed quota comes before weighted borrowing in a hierarchy",
		fab:  four,
		cfg:  Config{Policy: PolicyDRF},
		queues: []Queue{
			{Name: "org1", Guaranteed: 16, BorrowLimit: -1}, {Name: "t1", Parent: "org1", Guaranteed: 8, BorrowLimit: -1}, {Name: "t2", Parent: "org1", Guaranteed: 8, BorrowLimit: -1},
			{Name: "org2", Guaranteed: 16, BorrowLimit: -1, Weight: 100}, {Name: "t3", Parent: "org2", Guaranteed: 16, BorrowLimit: -1},
		},
		steps: []step{{
			// t3 is heavy-weighted and first in time, but org1's teams get their guarantees.
			submit: []Job{
				jb("t3a").gang(1, 8).queue("t3").obj(), jb("t3b").gang(1, 8).queue("t3").obj(), jb("t3c").gang(1, 8).queue("t3").obj(),
				jb("t1a").gang(1, 8).queue("t1").at(1).obj(), jb("t2a").gang(1, 8).queue("t2").at(2).obj(),
			},
			want: []dec{place("t1a", 1, "n00:0-7"), place("t3a", 1, "n01:0-7"), place("t2a", 1, "n02:0-7"), place("t3b", 1, "n03:0-7")},
		}},
	}})
}

func TestPreemption(t *testing.T) {
	cfg := DefaultConfig() // MinRuntime and PreemptBackoff: 5 minutes
	runScenarios(t, []scenario{{
		name: "the cheapest victim by GPUs times work since its last checkpoint",
		fab:  four, cfg: cfg,
		running: []restored{
			{jb("lo1").gang(1, 8).ckpt(30 * min_).obj(), "n00:0-7", -hour}, // checkpointed at t0: costs nothing
			{jb("lo2").gang(1, 8).obj(), "n01:0-7", -hour},
			{jb("lo3").gang(1, 8).obj(), "n02:0-7", -hour},
			{jb("lo4").gang(1, 8).obj(), "n03:0-7", -hour},
		},
		steps: []step{{
			ckpt:   []string{"lo3"},
			submit: []Job{jb("hi").gang(1, 8).prio(10).obj()},
			want:   []dec{preempt("lo1", "hi"), place("hi", 1, "n00:0-7")},
		}, {
			// Two nodes in one leaf: leaf-1 (lo3, lo4) beats the cheaper
			// pair lo3+lo2 that would span both leaves... and leaf-0
			// cannot be freed without preempting hi.
			at:     time.Second,
			submit: []Job{jb("hi2").gang(2, 8).prio(10).obj()},
			want:   []dec{preempt("lo3", "hi2"), preempt("lo4", "hi2"), place("hi2", 2, "n02:0-7 n03:0-7")},
		}},
	}, {
		name: "simulated, then rolled back when the preemptor would still not fit",
		fab:  four, cfg: cfg,
		running: []restored{
			{jb("lo").gang(1, 8).obj(), "n00:0-7", -hour},
			{jb("fixed").gang(3, 8).fixed().obj(), "n01:0-7 n02:0-7 n03:0-7", -hour},
		},
		steps: []step{
			{submit: []Job{jb("hi").gang(2, 8).prio(10).obj()}, want: nil},
			{at: min_, want: nil},
			{at: 2 * min_, want: nil, reasons: map[string]string{"hi": "nodes reserved"}},
		},
	}, {
		name: "minimum runtime protects a job that just started",
		fab:  fab{leaves: 1, nodes: 1, gpus: 8}, cfg: cfg,
		running: []restored{{jb("lo").gang(1, 8).obj(), "n00:0-7", -min_}},
		steps: []step{
			{submit: []Job{jb("hi").gang(1, 8).prio(10).obj()}, want: nil},
			{at: 4*min_ - time.Second, want: nil},
			{at: 4 * min_, want: []dec{preempt("lo", "hi"), place("hi", 1, "n00:0-7")}},
		},
	}, {
		name: "backoff: a preempted job does not turn around and preempt at once",
		fab:  fab{leaves: 1, nodes: 2, gpus: 8}, cfg: cfg,
		running: []restored{
			{jb("mid").gang(1, 8).prio(5).ckpt(30 * min_).obj(), "n00:0-7", -hour},
			{jb("low").gang(1, 8).obj(), "n01:0-7", -hour},
		},
		steps: []step{
			{submit: []Job{jb("hi").gang(1, 8).prio(10).obj()}, want: []dec{preempt("mid", "hi"), place("hi", 1, "n00:0-7")}},
			{at: min_, want: nil, reasons: map[string]string{"mid": "may preempt others again from 2025-01-01T00:05:00Z"}},
			{at: 5 * min_, want: []dec{preempt("low", "mid"), place("mid", 1, "n01:0-7")}},
		},
	}, {
		name: "no preemption loop: equal ranks never preempt, the preemptor keeps the freed GPUs",
		fab:  four, cfg: cfg,
		running: []restored{
			{jb("a").gang(2, 8).obj(), "n00:0-7 n01:0-7", -hour},
			{jb("b").gang(2, 8).prio(1).obj(), "n02:0-7 n03:0-7", -hour},
		},
		steps: []step{
			{submit: []Job{jb("p").gang(2, 8).prio(1).obj(), jb("q").gang(1, 8).prio(1).at(1).obj()}, want: []dec{preempt("a", "p"), place("p", 2, "n00:0-7 n01:0-7")}},
			{at: 10 * min_, want: nil},
			{at: 20 * min_, want: nil},
			// q (priority 1) found no victim of lower rank, so it waited for b.
			{at: 30 * min_, finish: []string{"b"}, want: []dec{place("q", 1, "n02:0-7")}},
		},
	}, {
		name:    "least attained service preempts the job that attained a band more",
		fab:     fab{leaves: 1, nodes: 1, gpus: 8},
		cfg:     Config{Policy: PolicyLAS, MinRuntime: 10 * min_, LASQuantum: 3600, LASFactor: 10},
		running: []restored{{jb("old").gang(1, 8).obj(), "n00:0-7", -hour}}, // 28,800 GPU-s: band 1
		steps: []step{
			{submit: []Job{jb("new").gang(1, 8).prio(100).obj()}, want: []dec{preempt("old", "new"), place("new", 1, "n00:0-7")}},
			// new reaches band 1 after 450 s; equal bands never preempt.
			{at: 30 * min_, want: nil},
		},
	}})
}

func TestBackfill(t *testing.T) {
	bf := Config{Policy: PolicyBackfill}
	runScenarios(t, []scenario{{
		name: "EASY: a job that ends before the reserved start backfills; longer or unknown ones wait",
		fab:  four, cfg: bf,
		running: []restored{
			{jb("r1").gang(2, 8).runtime(2 * hour).obj(), "n00:0-7 n01:0-7", -hour}, // ends at +1h
			{jb("r2").gang(1, 8).runtime(4 * hour).obj(), "n02:0-7", -hour},         // ends at +3h
		},
		steps: []step{{
			submit: []Job{
				jb("head").gang(3, 8).obj(),
				jb("long").gang(1, 8).runtime(2 * hour).at(1).obj(),
				jb("noest").gang(1, 8).at(2).obj(),
				jb("short").gang(1, 8).runtime(30 * min_).at(3).obj(),
				jb("later").gang(1, 8).runtime(30 * min_).at(4).obj(),
			},
			want: []dec{place("short", 1, "n03:0-7")},
			reasons: map[string]string{
				"head":  "first in line: 3 nodes reserved, expected start 2025-01-01T01:00:00Z",
				"long":  "it would delay job head",
				"noest": "backfill needs a runtime estimate ending by then",
				"later": "no node has 8 free GPUs (the most free on one node: 0)",
			},
		}, {
			at:     hour,
			finish: []string{"r1", "short"},
			want:   []dec{place("head", 3, "n00:0-7 n01:0-7 n03:0-7")},
		}},
	}, {
		name: "jobs without an estimate backfill outside the reservation only",
		// three leaves of two nodes: n00 n01 | n02 n03 | n04 n05
		fab: fab{leaves: 3, nodes: 2, gpus: 8}, cfg: bf,
		running: []restored{{jb("r1").gang(2, 8).runtime(2 * hour).obj(), "n00:0-7 n01:0-7", -hour}},
		steps: []step{{
			submit: []Job{jb("head").gang(5, 8).obj(), jb("noest").gang(1, 8).at(1).obj(), jb("noest2").gang(1, 8).at(2).obj()},
			want:   []dec{place("noest", 1, "n05:0-7")},
		}},
	}, {
		name: "strict FIFO: the head blocks everyone",
		fab:  four, cfg: Config{Policy: PolicyFIFO},
		running: []restored{{jb("r1").gang(2, 8).obj(), "n00:0-7 n01:0-7", -hour}},
		steps: []step{{
			submit:  []Job{jb("head").gang(3, 8).obj(), jb("small").gang(1, 1).at(1).obj()},
			want:    nil,
			reasons: map[string]string{"small": "strict FIFO: waits behind job head"},
		}},
	}})
}

func TestFailuresAndElasticity(t *testing.T) {
	cfg := DefaultConfig()
	runScenarios(t, []scenario{{
		name: "a failed node takes its gang down; it is requeued whole and placed again",
		fab:  four, cfg: cfg,
		running: []restored{{jb("g").gang(2, 8).obj(), "n00:0-7 n01:0-7", -hour}, {jb("s").obj(), "n02:0", -hour}},
		steps: []step{{
			down: []string{"n01"},
			want: []dec{requeue("g"), place("g", 2, "n00:0-7 n03:0-7")},
		}},
	}, {
		name: "an elastic gang shrinks on failure and grows back after repair",
		fab:  four, cfg: cfg,
		running: []restored{{jb("e").gang(4, 8).min(2).obj(), "n00:0-7 n01:0-7 n02:0-7 n03:0-7", -hour}},
		steps: []step{
			{down: []string{"n01"}, want: []dec{shrink("e", 3, "n00:0-7 n02:0-7 n03:0-7")}},
			{at: min_, want: nil},
			{at: 2 * min_, up: []string{"n01"}, want: []dec{grow("e", 4, "n00:0-7 n01:0-7 n02:0-7 n03:0-7")}},
		},
	}, {
		name: "a gang below its minimum is requeued whole, restarts at the size that fits and regrows",
		fab:  four, cfg: cfg,
		running: []restored{{jb("e").gang(4, 8).min(3).obj(), "n00:0-7 n01:0-7 n02:0-7 n03:0-7", -hour}},
		steps: []step{
			{down: []string{"n01"}, want: []dec{shrink("e", 3, "n00:0-7 n02:0-7 n03:0-7")}},
			{at: min_, down: []string{"n02"}, want: []dec{requeue("e")}, reasons: map[string]string{"e": "the most in one cluster: 2"}},
			{at: 2 * min_, up: []string{"n01"}, want: []dec{place("e", 3, "n00:0-7 n01:0-7 n03:0-7")}},
			{at: 3 * min_, up: []string{"n02"}, want: []dec{grow("e", 4, "n00:0-7 n01:0-7 n02:0-7 n03:0-7")}},
		},
	}, {
		name: "shrinking drops whole tensor-parallel groups",
		// racks of two 4-GPU nodes: {n00,n01} {n02,n03}
		fab: fab{leaves: 1, nodes: 4, gpus: 4, nvlink: 2}, cfg: cfg,
		running: []restored{{jb("e").gang(4, 4).tp(8).min(2).obj(), "n00:0-3 n01:0-3 n02:0-3 n03:0-3", -hour}},
		steps:   []step{{down: []string{"n03"}, noCycle: true, want: []dec{shrink("e", 2, "n00:0-3 n01:0-3")}}},
	}, {
		name: "a node down twice and an unknown node change nothing",
		fab:  four, cfg: cfg,
		steps: []step{{down: []string{"n00", "n00"}, want: nil}},
	}})
}

// TestPeerFailureModes replays what goes wrong in Kueue, Volcano and KAI.
func TestPeerFailureModes(t *testing.T) {
	runScenarios(t, []scenario{{
		name:    "admitted-but-unplaceable: a job that fits the quota but no leaf never holds the quota or the queue",
		fab:     four,
		cfg:     DefaultConfig(),
		queues:  []Queue{{Name: "team", Guaranteed: 32}},
		running: []restored{{jb("x").gang(2, 4).queue("team").obj(), "n00:0-3 n02:0-3", -hour}},
		steps: []step{{
			// 24 GPUs free, quota room 24: Kueue admits big by quota, then
			// topology-aware placement finds no leaf and big sits admitted at
			// the head. Here it is not admitted, and small runs.
			submit:  []Job{jb("big").gang(2, 8).required(topology.LevelLeaf).queue("team").obj(), jb("small").gang(1, 8).queue("team").at(1).obj()},
			want:    []dec{place("small", 1, "n03:0-7")},
			reasons: map[string]string{"big": "first in line: 2 nodes reserved"},
		}, {
			at:     hour,
			finish: []string{"x"},
			want:   []dec{place("big", 2, "n00:0-7 n01:0-7")},
		}},
	}, {
		name:    "a doomed job is not re-picked into evictions every cycle and starves no one",
		fab:     four,
		cfg:     DefaultConfig(),
		running: []restored{{jb("s0").gang(1, 8).obj(), "n00:0-7", -hour}},
		steps: []step{
			{down: []string{"n01", "n03"}, submit: []Job{jb("doomed").gang(2, 8).prio(100).required(topology.LevelLeaf).obj(), jb("s1").gang(1, 8).at(1).obj()},
				want:    []dec{place("s1", 1, "n02:0-7")},
				reasons: map[string]string{"doomed": "it would not fit even if every running job ended (2 nodes down or cordoned)"}},
			{at: 10 * min_, finish: []string{"s0"}, submit: []Job{jb("s2").gang(1, 8).at(2).obj()}, want: []dec{place("s2", 1, "n00:0-7")}},
			{at: 20 * min_, finish: []string{"s1"}, submit: []Job{jb("s3").gang(1, 8).at(3).obj()}, want: []dec{place("s3", 1, "n02:0-7")}},
			{at: 30 * min_, up: []string{"n01"}, want: []dec{preempt("s2", "doomed"), place("doomed", 2, "n00:0-7 n01:0-7")}},
		},
	}, {
		name: "packing keeps whole leaves free: 64 one-GPU jobs leave a block for the 8-node gang",
		fab:  twoBlocks,
		cfg:  Config{Policy: PolicyFIFO},
		steps: []step{
			{submit: ones(64), noCycle: true},
			{submit: []Job{jb("gang").gang(8, 8).required(topology.LevelBlock).at(hour).obj()}, want: append(onesPlaced(64), place("gang", 8,
				"n08:0-7 n09:0-7 n10:0-7 n11:0-7 n12:0-7 n13:0-7 n14:0-7 n15:0-7"))},
		},
	}, {
		name: "the peers' spreading: the same jobs leave no idle node and the gang waits",
		fab:  twoBlocks,
		cfg:  Config{Policy: PolicyFIFO, Spread: true},
		steps: []step{
			{submit: append(ones(64), jb("gang").gang(8, 8).required(topology.LevelBlock).at(hour).obj()), noCycle: true},
			{want: spreadPlaced(64), reasons: map[string]string{"gang": "needs 8 idle nodes in one block; the most in one block: 0"}},
		},
	}})
}

func ones(n int) []Job {
	var js []Job
	for i := range n {
		js = append(js, jb(id1(i)).at(time.Duration(i)).obj())
	}
	return js
}

func id1(i int) string { return "one" + string(rune('A'+i/26)) + string(rune('a'+i%26)) }

// onesPlaced is where packing puts n one-GPU jobs: filling n00, then n01...
func onesPlaced(n int) []dec {
	var ds []dec
	for i := range n {
		ds = append(ds, place(id1(i), 1, nodeName(i/8)+":"+itoa(i%8)))
	}
	return ds
}

// spreadPlaced is where spreading puts them: first one per idle node, the
// emptiest block, leaf and node first, then round after round.
func spreadPlaced(n int) []dec {
	order := []int{0, 8, 4, 12, 1, 9, 5, 13, 2, 10, 6, 14, 3, 11, 7, 15}
	var ds []dec
	for i := range n {
		node := i % 16 // later rounds: the partly used node with the most free GPUs, lowest ID first
		if i < 16 {
			node = order[i]
		}
		ds = append(ds, place(id1(i), 1, nodeName(node)+":"+itoa(i/16)))
	}
	return ds
}

func nodeName(i int) string { return "n" + string(rune('0'+i/10)) + string(rune('0'+i%10)) }
func itoa(i int) string     { return string(rune('0' + i)) }

// TestCordonKeepsRunningGangs checks that an operator's cordon stops new
// placements on a node without touching the gang running there, that a
// cordoned node that then fails still requeues its gang, and that NodeUp
// does not lift the cordon.
func TestCordonKeepsRunningGangs(t *testing.T) {
	f, err := topology.Generate("ndv5", 16)
	if err != nil {
		t.Fatal(err)
	}
	s := New(f, DefaultConfig())
	now := time.Unix(1000, 0)
	if err := s.Submit(Job{ID: "a", Queue: "default", Replicas: 1, GPUsPerReplica: 8, Submitted: now}); err != nil {
		t.Fatal(err)
	}
	ds := s.Schedule(now)
	if len(ds) != 1 || ds[0].Kind != Place {
		t.Fatalf("first placement: %+v", ds)
	}
	n := ds[0].Placement.Nodes[0].Node
	other := 1 - n
	s.Cordon(n, true)
	s.Cordon(other, true)
	if err := s.Submit(Job{ID: "b", Queue: "default", Replicas: 1, GPUsPerReplica: 1, Submitted: now}); err != nil {
		t.Fatal(err)
	}
	if ds := s.Schedule(now.Add(time.Second)); len(ds) != 0 {
		t.Fatalf("placed on cordoned nodes: %+v", ds)
	}
	if got := s.State().FreeGPUs(other); got != 0 {
		t.Errorf("a cordoned node offers %d GPUs", got)
	}
	// The running gang is untouched by the cordon, and goes when the node fails.
	ds = s.NodeDown(n, now.Add(2*time.Second))
	if d := cmp.Diff([]Decision{{Kind: Requeue, Job: "a", Reason: "node " + f.Nodes[n].Name + " down"}}, ds); d != "" {
		t.Errorf("NodeDown of a cordoned node (-want +got):\n%s", d)
	}
	s.NodeUp(n, now.Add(3*time.Second))
	if ds := s.Schedule(now.Add(4 * time.Second)); len(ds) != 0 {
		t.Fatalf("NodeUp lifted the cordon: %+v", ds)
	}
	s.Cordon(other, false)
	// Only the uncordoned 8-GPU node is in service: the requeued gang (first
	// in line) takes it and the 1-GPU job waits for room.
	ds = s.Schedule(now.Add(5 * time.Second))
	if len(ds) != 1 || ds[0].Job != "a" {
		t.Fatalf("after uncordon want gang a placed, got %+v", ds)
	}
	for _, d := range ds {
		if d.Kind != Place || d.Placement.Nodes[0].Node != other {
			t.Errorf("placed %s on %v, want the uncordoned node", d.Job, d.Placement.Nodes)
		}
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}
