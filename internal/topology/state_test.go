package topology

import (
	"math/bits"
	"math/rand/v2"
	"testing"
)

// recount computes every domain's capacity from scratch, the slow way the
// incremental counters must agree with.
func recount(s *State) [3][]int32 {
	f := s.f
	var c [3][]int32
	for u := range c {
		c[u] = make([]int32, len(f.Domains))
	}
	add := func(d DomainID, u Unit, v int32) {
		for ; d != NoDomain; d = f.Domains[d].Parent {
			c[u][d] += v
		}
	}
	for i := range f.Nodes {
		n := NodeID(i)
		if s.cordoned[n] {
			continue
		}
		free := bits.OnesCount64(s.free[n])
		add(f.Nodes[n].Leaf, UnitGPU, int32(free))
		if free == f.NodeGPUs(n) {
			add(f.Nodes[n].Leaf, UnitNode, 1)
		}
	}
	for _, nv := range f.NVLinks {
		whole := true
		for _, n := range nv.Nodes {
			whole = whole && !s.cordoned[n] && bits.OnesCount64(s.free[n]) == f.NodeGPUs(n)
		}
		if whole {
			add(f.Nodes[nv.Nodes[0]].Leaf, UnitNVLink, 1)
		}
	}
	return c
}

func checkCounters(t *testing.T, s *State, step int) {
	t.Helper()
	want := recount(s)
	for u := range want {
		for d := range want[u] {
			if got := s.cap[u][d]; got != want[u][d] {
				t.Fatalf("step %d: domain %s %s: counter says %d, recount %d",
					step, s.f.Domains[d].Name, Unit(u), got, want[u][d])
			}
		}
	}
}

// TestStateCountersMatchRecount drives random allocations, releases and
// cordons on fleets with one-node and rack-sized NVLink domains and checks
// the incremental counters against a recount after every step.
func TestStateCountersMatchRecount(t *testing.T) {
	for _, preset := range []string{"ndv5", "gb200-nvl72"} {
		f, err := Generate(preset, 2304)
		if err != nil {
			t.Fatal(err)
		}
		s := NewState(f)
		checkCounters(t, s, 0)
		r := rand.New(rand.NewPCG(1, 2))
		for step := 1; step <= 3000; step++ {
			n := NodeID(r.IntN(len(f.Nodes)))
			mask := r.Uint64() & fullMask(f.NodeGPUs(n))
			switch r.IntN(4) {
			case 0, 1:
				// Allocate must refuse exactly taken GPUs and cordoned nodes.
				wantErr := s.cordoned[n] || mask&^s.free[n] != 0
				if err := s.Allocate(n, mask); (err != nil) != wantErr {
					t.Fatalf("step %d: Allocate(%d, %b) = %v, want error %v", step, n, mask, err, wantErr)
				}
			case 2:
				taken := ^s.free[n] & fullMask(f.NodeGPUs(n))
				if err := s.Release(n, taken&mask); taken&mask != 0 && err != nil {
					t.Fatalf("step %d: Release of taken GPUs: %v", step, err)
				}
			case 3:
				s.SetCordoned(n, !s.cordoned[n])
			}
			checkCounters(t, s, step)
		}
	}
}

func TestAllocateRefusesWithoutChange(t *testing.T) {
	f, _ := Generate("ndv5", 16)
	s := NewState(f)
	if err := s.Allocate(0, 0b11); err != nil {
		t.Fatal(err)
	}
	before := s.Clone()
	if err := s.Allocate(0, 0b110); err == nil {
		t.Fatal("allocated a GPU twice")
	}
	if err := s.Release(1, 0b1); err == nil {
		t.Fatal("released a free GPU")
	}
	if err := s.Release(0, 1<<9); err == nil {
		t.Fatal("released a GPU the node does not have")
	}
	s.SetCordoned(1, true)
	if err := s.Allocate(1, 1); err == nil {
		t.Fatal("allocated on a cordoned node")
	}
	s.SetCordoned(1, false)
	for u := range s.cap {
		for d := range s.cap[u] {
			if s.cap[u][d] != before.cap[u][d] {
				t.Fatalf("refused calls changed %s of domain %d", Unit(u), d)
			}
		}
	}
}

func TestSmallestFit(t *testing.T) {
	// 4096 GPUs of ndv5: 16 leaves of 32 nodes under one spine tier.
	f, _ := Generate("ndv5", 4096)
	s := NewState(f)
	leaves := f.DomainsAt(LevelLeaf)
	// Leave leaf 3 with 5 free nodes, leaf 7 with 9, every other leaf with 2.
	freeLeft := map[int]int{3: 5, 7: 9}
	for i, l := range leaves {
		keep, ok := freeLeft[i]
		if !ok {
			keep = 2
		}
		for _, n := range f.LeafNodes(l)[keep:] {
			if err := s.Allocate(n, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		need int
		want string
	}{
		{1, "leaf-0000"}, // best fit: the first leaf with 2, lowest ID wins ties
		{3, "leaf-0003"}, // 5 free: the tightest leaf that holds 3
		{6, "leaf-0007"}, // only leaf 7 holds 6
		{10, "cluster"},  // no leaf holds 10: the cluster does
		{200, ""},        // nothing does
	}
	for _, tc := range tests {
		d, ok := s.SmallestFit(tc.need, UnitNode, LevelLeaf)
		got := ""
		if ok {
			got = f.Domains[d].Name
		}
		if got != tc.want {
			t.Errorf("SmallestFit(%d nodes) = %q, want %q", tc.need, got, tc.want)
		}
	}
}
