package topology

import (
	"fmt"
	"math/bits"
)

// Unit is what a capacity is counted in.
type Unit uint8

const (
	UnitGPU    Unit = iota // free GPUs
	UnitNode               // nodes with every GPU free
	UnitNVLink             // NVLink domains with every GPU free
)

func (u Unit) String() string {
	switch u {
	case UnitGPU:
		return "gpus"
	case UnitNode:
		return "nodes"
	case UnitNVLink:
		return "nvlink-domains"
	}
	return fmt.Sprintf("unit(%d)", uint8(u))
}

// State is the allocation state of a fabric: which GPUs are free, and for
// every domain how many GPUs, whole nodes and whole NVLink domains are free.
// Every change costs O(depth of the tree); no query rescans the fleet.
//
// A cordoned (or failed) node keeps its free mask but counts as having no
// free capacity.
type State struct {
	f        *Fabric
	free     []uint64 // per node: bit g set when GPU g is free
	cordoned []bool
	nvlFree  []int32 // per NVLink domain: free GPUs on available nodes
	nvlSize  []int32 // per NVLink domain: GPUs in total
	cap      [3][]int32
}

// NewState returns a state with every GPU free.
func NewState(f *Fabric) *State {
	s := &State{
		f:        f,
		free:     make([]uint64, len(f.Nodes)),
		cordoned: make([]bool, len(f.Nodes)),
		nvlFree:  make([]int32, len(f.NVLinks)),
		nvlSize:  make([]int32, len(f.NVLinks)),
	}
	for u := range s.cap {
		s.cap[u] = make([]int32, len(f.Domains))
	}
	for i := range f.Nodes {
		g := f.Classes[f.Nodes[i].Class].GPUs
		s.free[i] = fullMask(g)
		s.nvlSize[f.Nodes[i].NVLink] += int32(g)
		s.nvlFree[f.Nodes[i].NVLink] += int32(g)
		s.addUp(f.Nodes[i].Leaf, int32(g), 1, 0)
	}
	for _, nv := range f.NVLinks {
		s.addUp(f.Nodes[nv.Nodes[0]].Leaf, 0, 0, 1)
	}
	return s
}

func fullMask(g int) uint64 {
	if g >= 64 {
		return ^uint64(0)
	}
	return 1<<uint(g) - 1
}

// Fabric returns the fabric this state allocates.
func (s *State) Fabric() *Fabric { return s.f }

// Clone returns an independent copy, for what-if placement.
func (s *State) Clone() *State {
	c := &State{f: s.f}
	c.free = append([]uint64(nil), s.free...)
	c.cordoned = append([]bool(nil), s.cordoned...)
	c.nvlFree = append([]int32(nil), s.nvlFree...)
	c.nvlSize = s.nvlSize // never written after NewState
	for u := range s.cap {
		c.cap[u] = append([]int32(nil), s.cap[u]...)
	}
	return c
}

// CloneInto copies s into dst, reusing its memory, and returns it; a nil
// dst or one of another fabric gets a fresh Clone.
func (s *State) CloneInto(dst *State) *State {
	if dst == nil || dst.f != s.f {
		return s.Clone()
	}
	copy(dst.free, s.free)
	copy(dst.cordoned, s.cordoned)
	copy(dst.nvlFree, s.nvlFree)
	for u := range s.cap {
		copy(dst.cap[u], s.cap[u])
	}
	return dst
}

// FreeMask returns the bitmask of free GPUs of node n (ignoring cordons).
func (s *State) FreeMask(n NodeID) uint64 { return s.free[n] }

// FreeGPUs returns the number of GPUs of n that can be allocated now.
func (s *State) FreeGPUs(n NodeID) int {
	if s.cordoned[n] {
		return 0
	}
	return bits.OnesCount64(s.free[n])
}

// NodeIdle reports whether node n is available with every GPU free.
func (s *State) NodeIdle(n NodeID) bool {
	return !s.cordoned[n] && s.free[n] == fullMask(s.f.NodeGPUs(n))
}

// Cordoned reports whether node n is out of service.
func (s *State) Cordoned(n NodeID) bool { return s.cordoned[n] }

// NVLinkFree returns the free GPUs of NVLink domain v on available nodes.
func (s *State) NVLinkFree(v int32) int { return int(s.nvlFree[v]) }

// Capacity returns the free capacity of domain d counted in unit u.
func (s *State) Capacity(d DomainID, u Unit) int { return int(s.cap[u][d]) }

// Allocate takes the GPUs in mask on node n. It fails, changing nothing, when
// one of them is not free or the node is cordoned.
func (s *State) Allocate(n NodeID, mask uint64) error {
	if s.cordoned[n] {
		return fmt.Errorf("node %s is cordoned", s.f.Nodes[n].Name)
	}
	if mask&^s.free[n] != 0 {
		return fmt.Errorf("node %s: GPUs %#x are not free", s.f.Nodes[n].Name, mask&^s.free[n])
	}
	s.change(n, s.free[n]&^mask, false)
	return nil
}

// Release frees the GPUs in mask on node n. It fails, changing nothing, when
// one of them is already free or not on the node.
func (s *State) Release(n NodeID, mask uint64) error {
	all := fullMask(s.f.NodeGPUs(n))
	if mask&^all != 0 {
		return fmt.Errorf("node %s has no GPUs %#x", s.f.Nodes[n].Name, mask&^all)
	}
	if mask&s.free[n] != 0 {
		return fmt.Errorf("node %s: GPUs %#x are already free", s.f.Nodes[n].Name, mask&s.free[n])
	}
	s.change(n, s.free[n]|mask, s.cordoned[n])
	return nil
}

// SetCordoned takes node n out of service (its free GPUs stop counting) or
// puts it back.
func (s *State) SetCordoned(n NodeID, c bool) {
	if s.cordoned[n] != c {
		s.change(n, s.free[n], c)
	}
}

// change moves node n to a new free mask and cordon flag, and carries the
// difference up the tree.
func (s *State) change(n NodeID, free uint64, cordoned bool) {
	nd := &s.f.Nodes[n]
	v := nd.NVLink
	gBefore, nodeBefore := s.contrib(n)
	nvlBefore := s.nvlFree[v] == s.nvlSize[v]
	s.free[n], s.cordoned[n] = free, cordoned
	gAfter, nodeAfter := s.contrib(n)
	s.nvlFree[v] += gAfter - gBefore
	nvlAfter := s.nvlFree[v] == s.nvlSize[v]
	s.addUp(nd.Leaf, gAfter-gBefore, b2i(nodeAfter)-b2i(nodeBefore), b2i(nvlAfter)-b2i(nvlBefore))
}

func (s *State) contrib(n NodeID) (gpus int32, whole bool) {
	if s.cordoned[n] {
		return 0, false
	}
	c := bits.OnesCount64(s.free[n])
	return int32(c), c == s.f.NodeGPUs(n)
}

func (s *State) addUp(d DomainID, gpus, nodes, nvl int32) {
	if gpus == 0 && nodes == 0 && nvl == 0 {
		return
	}
	g, nd, nv := s.cap[UnitGPU], s.cap[UnitNode], s.cap[UnitNVLink]
	for ; d != NoDomain; d = s.f.Domains[d].Parent {
		g[d] += gpus
		nd[d] += nodes
		nv[d] += nvl
	}
}

func b2i(b bool) int32 {
	if b {
		return 1
	}
	return 0
}

// SmallestFit finds the lowest level, from min upwards, where one domain has
// at least need free capacity in unit u, and there the domain with the least
// such capacity (best fit; ties go to the lower ID). It scans only the
// domains of the levels it visits, never the nodes.
func (s *State) SmallestFit(need int, u Unit, min Level) (DomainID, bool) {
	min = max(min, LevelLeaf)
	c := s.cap[u]
	for l := min; l < numLevels; l++ {
		best, bestCap := NoDomain, int32(1<<31-1)
		for _, d := range s.f.byLevel[l] {
			if v := c[d]; v >= int32(need) && v < bestCap {
				best, bestCap = d, v
			}
		}
		if best != NoDomain {
			return best, true
		}
	}
	return NoDomain, false
}
