package sched

import (
	"cmp"
	"math/bits"
	"slices"

	"gpucloud/internal/topology"
)

// scope is how far a gang may spread.
type scope struct {
	node   bool           // all on one node (Required: node)
	nvlink bool           // all in one NVLink domain (Required: nvlink)
	level  topology.Level // otherwise: inside one domain of this switch level
}

// request is one placement question: n replicas of gpr GPUs, in groups of m
// consecutive replicas that must share an NVLink domain.
type request struct {
	gpr, n, m int
	model     string
	scope     scope
	within    topology.DomainID // restrict to this domain (NoDomain: anywhere)
	node      topology.NodeID   // restrict to this node (-1: any)
}

// miss says why a request found no placement; PendingReason formats it.
type miss struct {
	need  int
	unit  uint8 // unitGPUs on one node, unitNodes whole nodes, unitReplicas
	level topology.Level
	best  int
	dom   topology.DomainID // where best was found (NoDomain: none)
	model string
}

const (
	unitGPUs uint8 = iota + 1
	unitNodes
	unitReplicas
)

// shapeKey identifies what a placement depends on, for the failure memo.
type shapeKey struct {
	model     string
	gpr, n, m int32
	sc        scope
}

// failMemo is a failed placement of one shape at a view's epoch (valid:
// the entry is set).
type failMemo struct {
	epoch uint64
	miss  miss
	valid bool
}

// placer finds placements on a view. Its buffers are reused between calls;
// it holds no state that outlives a call.
type placer struct {
	t      *topo
	spread bool
	lc     []leafCap
	caps   []int32 // per domain scratch (slot path)
	nodes  []nodeFree
	allocs []NodeAlloc
	leafs  []topology.DomainID
	doms   []topology.DomainID
}

type leafCap struct {
	d topology.DomainID
	c int32
}

type nodeFree struct {
	n topology.NodeID
	c int32
}

func newPlacer(t *topo, spread bool) *placer {
	return &placer{t: t, spread: spread, caps: make([]int32, len(t.f.Domains))}
}

// better reports whether capacity a beats b for best fit (least room left)
// or, when spreading, worst fit.
func (pl *placer) better(a, b int32) bool {
	if pl.spread {
		return a > b
	}
	return a < b
}

// place answers rq on v: a placement sorted by node, or why there is none.
func (pl *placer) place(v *view, rq *request) (*Placement, miss) {
	ms := miss{need: rq.n, unit: unitReplicas, dom: topology.NoDomain, model: rq.model}
	for p := range pl.t.pools {
		po := &pl.t.pools[p]
		if (rq.model != "" && po.model != rq.model) || po.gpus < rq.gpr {
			continue
		}
		pl.allocs = pl.allocs[:0]
		if pl.placeInPool(v, p, rq, &ms) {
			return pl.build(p, rq), ms
		}
	}
	return nil, ms
}

func (pl *placer) build(p int, rq *request) *Placement {
	nodes := slices.Clone(pl.allocs)
	slices.SortFunc(nodes, func(a, b NodeAlloc) int { return cmp.Compare(a.Node, b.Node) })
	pl.leafs = pl.leafs[:0]
	for _, a := range nodes {
		pl.leafs = append(pl.leafs, pl.t.f.Nodes[a.Node].Leaf)
	}
	slices.Sort(pl.leafs)
	return &Placement{Nodes: nodes, Replicas: rq.n, Leaves: len(slices.Compact(pl.leafs)),
		MinLeaves: pl.t.minLeavesEmpty(p, rq.gpr, rq.n, rq.m)}
}

func (pl *placer) placeInPool(v *view, p int, rq *request, ms *miss) bool {
	g := pl.t.pools[p].gpus
	need := rq.n * rq.gpr
	if rq.node >= 0 {
		n := rq.node
		if int(pl.t.nodePool[n]) != p {
			return false
		}
		if free, _ := v.contrib(n); free < need {
			*ms = miss{need: need, unit: unitGPUs, level: topology.LevelNode, best: free, dom: topology.NoDomain, model: rq.model}
			return false
		}
		pl.allocs = append(pl.allocs, NodeAlloc{n, pickGPUs(v.st.FreeMask(n), g, rq.n, rq.gpr)})
		return true
	}
	if need <= g {
		if n, ok := pl.bestNode(v, p, need, rq.within); ok {
			pl.allocs = append(pl.allocs, NodeAlloc{n, pickGPUs(v.st.FreeMask(n), g, rq.n, rq.gpr)})
			return true
		}
		if rq.n == 1 || rq.scope.node || (rq.scope.nvlink && !pl.t.nvlMulti) {
			*ms = miss{need: need, unit: unitGPUs, level: topology.LevelNode, best: pl.mostOnNode(v, p, rq.within),
				dom: topology.NoDomain, model: rq.model}
			return false // one replica never spans nodes
		}
	} else if rq.scope.node || (rq.scope.nvlink && !pl.t.nvlMulti) {
		return false // validation rejects this; a shrunk pool may get here
	}
	if pl.t.nvlMulti && pl.placeNVLink(v, p, rq) {
		return true
	}
	if rq.scope.nvlink {
		*ms = miss{need: rq.n, unit: unitReplicas, level: topology.LevelNVLink, dom: topology.NoDomain, model: rq.model}
		return false
	}
	if rq.gpr == g && rq.m == 1 {
		return pl.wholeGang(v, p, rq, ms)
	}
	return pl.slotGang(v, p, rq, ms)
}

// bestNode finds one node of pool p with need free GPUs: best fit among
// partly used nodes first, so whole nodes stay free for gangs; then an idle
// node carved from the fullest leaf of the fullest block. Spread reverses
// both preferences.
func (pl *placer) bestNode(v *view, p, need int, within topology.DomainID) (topology.NodeID, bool) {
	g := pl.t.pools[p].gpus
	if within != topology.NoDomain {
		best, bestC := topology.NodeID(-1), int32(0)
		for _, l := range pl.t.leavesUnder[within] {
			if int(v.freeG[p][l]) < need {
				continue
			}
			for _, n := range pl.t.f.LeafNodes(l) {
				if int(pl.t.nodePool[n]) != p {
					continue
				}
				c, _ := v.contrib(n)
				if c >= need && (best < 0 || pl.better(int32(c), bestC)) {
					best, bestC = n, int32(c)
				}
			}
		}
		return best, best >= 0
	}
	if !pl.spread {
		for c := need; c < g; c++ {
			if n := v.bucket[p][c-1].first(); n >= 0 {
				return topology.NodeID(n), true
			}
		}
		return pl.idleNode(v, p, pl.t.roots)
	}
	if n, ok := pl.idleNode(v, p, pl.t.roots); ok {
		return n, true
	}
	for c := g - 1; c >= need; c-- {
		if n := v.bucket[p][c-1].first(); n >= 0 {
			return topology.NodeID(n), true
		}
	}
	return -1, false
}

// idleNode descends from the given domains to an idle node, picking at
// every level the child with the fewest idle nodes (most with spread).
func (pl *placer) idleNode(v *view, p int, from []topology.DomainID) (topology.NodeID, bool) {
	idle := v.idle[p]
	for {
		best := topology.NoDomain
		for _, d := range from {
			if idle[d] > 0 && (best == topology.NoDomain || pl.better(idle[d], idle[best])) {
				best = d
			}
		}
		if best == topology.NoDomain {
			return -1, false
		}
		if pl.t.level(best) == topology.LevelLeaf {
			for _, n := range pl.t.f.LeafNodes(best) {
				if int(pl.t.nodePool[n]) == p {
					if _, ok := v.contrib(n); ok {
						return n, true
					}
				}
			}
			return -1, false
		}
		from = pl.t.f.Children(best)
	}
}

func (pl *placer) mostOnNode(v *view, p int, within topology.DomainID) int {
	if within == topology.NoDomain {
		for c := pl.t.pools[p].gpus; c >= 1; c-- {
			if v.bucket[p][c-1].first() >= 0 {
				return c
			}
		}
		return 0
	}
	best := 0
	for _, l := range pl.t.leavesUnder[within] {
		for _, n := range pl.t.f.LeafNodes(l) {
			if int(pl.t.nodePool[n]) == p {
				c, _ := v.contrib(n)
				best = max(best, c)
			}
		}
	}
	return best
}

// domainsAt lists the domains of level l inside within (all when NoDomain).
func (pl *placer) domainsAt(l topology.Level, within topology.DomainID) []topology.DomainID {
	if within == topology.NoDomain {
		return pl.t.f.DomainsAt(l)
	}
	wl := pl.t.level(within)
	switch {
	case wl < l:
		return nil
	case wl == l:
		pl.doms = append(pl.doms[:0], within)
		return pl.doms
	case l == topology.LevelLeaf:
		return pl.t.leavesUnder[within]
	}
	pl.doms = pl.doms[:0]
	for _, d := range pl.t.f.DomainsAt(l) {
		for a := d; a != topology.NoDomain; a = pl.t.f.Domains[a].Parent {
			if a == within {
				pl.doms = append(pl.doms, d)
				break
			}
		}
	}
	return pl.doms
}

// levelsFor lists the switch levels a request may use, bottom-up.
func (pl *placer) levelsFor(rq *request) []topology.Level {
	top := rq.scope.level
	if rq.within != topology.NoDomain {
		top = min(top, pl.t.level(rq.within))
	}
	ls := pl.t.levels
	for i, l := range ls {
		if l > top {
			return ls[:i]
		}
	}
	return ls
}

type domChoice struct {
	d     topology.DomainID
	k     int
	score int32
}

func (pl *placer) beats(a, b domChoice) bool {
	if b.d == topology.NoDomain {
		return true
	}
	if a.k != b.k {
		return a.k < b.k
	}
	if a.score != b.score {
		return pl.better(a.score, b.score)
	}
	return a.d < b.d
}

// chooseDomain applies the locality rule to candidates scored by eval:
// the fewest leaves any allowed domain can hold the gang in, at the lowest
// level where one domain achieves it, best fit among those.
func (pl *placer) chooseDomain(levels []topology.Level, within topology.DomainID,
	eval func(d topology.DomainID) (k int, score int32)) (domChoice, bool) {
	bestAt := func(l topology.Level) domChoice {
		b := domChoice{d: topology.NoDomain}
		for _, d := range pl.domainsAt(l, within) {
			if k, s := eval(d); k > 0 {
				if c := (domChoice{d, k, s}); pl.beats(c, b) {
					b = c
				}
			}
		}
		return b
	}
	if len(levels) == 0 {
		return domChoice{}, false
	}
	top := bestAt(levels[len(levels)-1])
	if top.d == topology.NoDomain {
		return top, false
	}
	for _, l := range levels[:len(levels)-1] {
		if b := bestAt(l); b.d != topology.NoDomain && b.k == top.k {
			return b, true
		}
	}
	return top, true
}

// wholeGang places n whole-node replicas: the fewest leaves possible, at the
// lowest level where one domain holds them, then leaves with the most idle
// nodes first and a best-fit leaf for the remainder.
func (pl *placer) wholeGang(v *view, p int, rq *request, ms *miss) bool {
	idle := v.idle[p]
	n := rq.n
	levels := pl.levelsFor(rq)
	ch, ok := pl.chooseDomain(levels, rq.within, func(d topology.DomainID) (int, int32) {
		if int(idle[d]) < n {
			return 0, 0
		}
		return v.minLeaves(p, d, n), idle[d]
	})
	if !ok {
		*ms = miss{need: n, unit: unitNodes, dom: topology.NoDomain, model: rq.model}
		if len(levels) > 0 {
			ms.level = levels[len(levels)-1]
			for _, d := range pl.domainsAt(ms.level, rq.within) {
				if int(idle[d]) > ms.best {
					ms.best, ms.dom = int(idle[d]), d
				}
			}
		}
		return false
	}
	if pl.t.level(ch.d) == topology.LevelLeaf {
		pl.takeIdle(v, p, ch.d, n)
		return true
	}
	pl.lc = pl.lc[:0]
	for _, l := range pl.t.leavesUnder[ch.d] {
		if c := idle[l]; c > 0 {
			pl.lc = append(pl.lc, leafCap{l, c})
		}
	}
	pl.fillLeaves(ch.k, n, func(l topology.DomainID, x int) { pl.takeIdle(v, p, l, x) })
	return true
}

// fillLeaves takes the k-1 leaves of pl.lc with the most room whole and the
// best-fitting remaining leaf for the rest; take places x replicas in l.
func (pl *placer) fillLeaves(k, n int, take func(l topology.DomainID, x int)) {
	lc := pl.lc
	slices.SortFunc(lc, func(a, b leafCap) int {
		if a.c != b.c {
			return int(b.c - a.c)
		}
		return cmp.Compare(a.d, b.d)
	})
	for _, x := range lc[:k-1] {
		take(x.d, int(x.c))
		n -= int(x.c)
	}
	last := -1
	for i := k - 1; i < len(lc); i++ {
		if int(lc[i].c) >= n && (last < 0 || pl.better(lc[i].c, lc[last].c)) {
			last = i
		}
	}
	take(lc[last].d, n)
}

func (pl *placer) takeIdle(v *view, p int, l topology.DomainID, x int) {
	full := fullMask(pl.t.pools[p].gpus)
	for _, n := range pl.t.f.LeafNodes(l) {
		if x == 0 {
			return
		}
		if int(pl.t.nodePool[n]) == p {
			if _, ok := v.contrib(n); ok {
				pl.allocs = append(pl.allocs, NodeAlloc{n, full})
				x--
			}
		}
	}
}

// slotGang is the general path: replicas smaller than a node, or
// tensor-parallel groups spanning replicas. Capacity is counted in replica
// slots per leaf by scanning the nodes of leaves with enough free GPUs.
func (pl *placer) slotGang(v *view, p int, rq *request, ms *miss) bool {
	caps := pl.caps
	unit := int32(rq.gpr * rq.m)
	scopeLeaves := pl.t.leavesUnder[pl.t.roots[0]]
	if rq.within != topology.NoDomain {
		scopeLeaves = pl.t.leavesUnder[rq.within]
	} else if len(pl.t.roots) > 1 {
		scopeLeaves = pl.t.f.DomainsAt(topology.LevelLeaf)
	}
	for _, l := range scopeLeaves {
		caps[l] = 0
		if v.freeG[p][l] >= unit {
			caps[l] = int32(pl.leafSlots(v, p, l, rq.gpr, rq.m))
		}
	}
	defer func() {
		for _, l := range scopeLeaves {
			caps[l] = 0
		}
	}()
	n := rq.n
	total := func(d topology.DomainID) int32 {
		if pl.t.level(d) == topology.LevelLeaf {
			return caps[d]
		}
		s := int32(0)
		for _, l := range pl.t.leavesUnder[d] {
			s += caps[l]
		}
		return s
	}
	levels := pl.levelsFor(rq)
	ch, ok := pl.chooseDomain(levels, rq.within, func(d topology.DomainID) (int, int32) {
		tot := total(d)
		if int(tot) < n {
			return 0, 0
		}
		if pl.t.level(d) == topology.LevelLeaf {
			return 1, tot
		}
		pl.lc = pl.lc[:0]
		for _, l := range pl.t.leavesUnder[d] {
			if caps[l] > 0 {
				pl.lc = append(pl.lc, leafCap{l, caps[l]})
			}
		}
		slices.SortFunc(pl.lc, func(a, b leafCap) int { return int(b.c - a.c) })
		k, left := 0, n
		for _, x := range pl.lc {
			if left <= 0 {
				break
			}
			k++
			left -= int(x.c)
		}
		return k, tot
	})
	if !ok {
		*ms = miss{need: n, unit: unitReplicas, dom: topology.NoDomain, model: rq.model}
		if len(levels) > 0 {
			ms.level = levels[len(levels)-1]
			for _, d := range pl.domainsAt(ms.level, rq.within) {
				if t := int(total(d)); t > ms.best {
					ms.best, ms.dom = t, d
				}
			}
		}
		return false
	}
	if pl.t.level(ch.d) == topology.LevelLeaf {
		pl.fillLeafSlots(v, p, ch.d, n, rq.gpr, rq.m)
		return true
	}
	pl.lc = pl.lc[:0]
	for _, l := range pl.t.leavesUnder[ch.d] {
		if caps[l] > 0 {
			pl.lc = append(pl.lc, leafCap{l, caps[l]})
		}
	}
	pl.fillLeaves(ch.k, n, func(l topology.DomainID, x int) { pl.fillLeafSlots(v, p, l, x, rq.gpr, rq.m) })
	return true
}

// leafSlots counts the replicas of gpr GPUs leaf l can take in whole groups
// of m per NVLink domain.
func (pl *placer) leafSlots(v *view, p int, l topology.DomainID, gpr, m int) int {
	if m == 1 {
		s := 0
		for _, n := range pl.t.f.LeafNodes(l) {
			if int(pl.t.nodePool[n]) == p {
				c, _ := v.contrib(n)
				s += c / gpr
			}
		}
		return s
	}
	s := 0
	for _, nv := range pl.t.leafNVL[l] {
		s += pl.nvlSlots(v, p, nv, gpr, m)
	}
	return s
}

func (pl *placer) nvlSlots(v *view, p int, nv int32, gpr, m int) int {
	s := 0
	for _, n := range pl.t.f.NVLinks[nv].Nodes {
		if int(pl.t.nodePool[n]) == p {
			c, _ := v.contrib(n)
			s += c / gpr
		}
	}
	return s / m * m
}

// fillLeafSlots places x replicas in leaf l, on partly used nodes first
// (emptiest first with spread), whole groups of m per NVLink domain.
func (pl *placer) fillLeafSlots(v *view, p int, l topology.DomainID, x, gpr, m int) {
	if m == 1 {
		pl.fillNodes(v, p, pl.t.f.LeafNodes(l), x, gpr)
		return
	}
	type nvc struct {
		nv int32
		c  int
	}
	var doms []nvc
	for _, nv := range pl.t.leafNVL[l] {
		if c := pl.nvlSlots(v, p, nv, gpr, m); c > 0 {
			doms = append(doms, nvc{nv, c})
		}
	}
	slices.SortFunc(doms, func(a, b nvc) int {
		if a.c != b.c {
			return b.c - a.c
		}
		return int(a.nv - b.nv)
	})
	for _, d := range doms {
		if x == 0 {
			return
		}
		take := min(d.c, x)
		pl.fillNodes(v, p, pl.t.f.NVLinks[d.nv].Nodes, take, gpr)
		x -= take
	}
}

func (pl *placer) fillNodes(v *view, p int, nodes []topology.NodeID, x, gpr int) {
	pl.nodes = pl.nodes[:0]
	for _, n := range nodes {
		if int(pl.t.nodePool[n]) == p {
			if c, _ := v.contrib(n); c >= gpr {
				pl.nodes = append(pl.nodes, nodeFree{n, int32(c)})
			}
		}
	}
	slices.SortFunc(pl.nodes, func(a, b nodeFree) int {
		if a.c != b.c {
			if pl.spread {
				return int(b.c - a.c)
			}
			return int(a.c - b.c)
		}
		return cmp.Compare(a.n, b.n)
	})
	g := pl.t.pools[p].gpus
	for _, nf := range pl.nodes {
		if x == 0 {
			return
		}
		k := min(int(nf.c)/gpr, x)
		pl.allocs = append(pl.allocs, NodeAlloc{nf.n, pickGPUs(v.st.FreeMask(nf.n), g, k, gpr)})
		x -= k
	}
}

// placeNVLink tries to hold the gang inside one multi-node NVLink domain
// (a GB200 NVL72 rack), best fit.
func (pl *placer) placeNVLink(v *view, p int, rq *request) bool {
	best, bestC := int32(-1), 0
	for _, l := range pl.scopeLeaves(rq.within) {
		if int(v.freeG[p][l]) < rq.n*rq.gpr {
			continue
		}
		for _, nv := range pl.t.leafNVL[l] {
			if len(pl.t.f.NVLinks[nv].Nodes) < 2 {
				continue
			}
			if c := pl.nvlSlots(v, p, nv, rq.gpr, rq.m); c >= rq.n && (best < 0 || pl.better(int32(c), int32(bestC))) {
				best, bestC = nv, c
			}
		}
	}
	if best < 0 {
		return false
	}
	pl.fillNodes(v, p, pl.t.f.NVLinks[best].Nodes, rq.n, rq.gpr)
	return true
}

func (pl *placer) scopeLeaves(within topology.DomainID) []topology.DomainID {
	if within != topology.NoDomain {
		return pl.t.leavesUnder[within]
	}
	return pl.t.f.DomainsAt(topology.LevelLeaf)
}

func fullMask(g int) uint64 {
	if g >= 64 {
		return ^uint64(0)
	}
	return 1<<uint(g) - 1
}

// pickGPUs chooses k chunks of gpr GPUs among free: aligned chunks whose
// buddy is the most used first, which keeps the other half of the board
// (its PCIe switches and NUMA node) whole for a bigger replica.
func pickGPUs(free uint64, g, k, gpr int) uint64 {
	var out uint64
	for range k {
		c := pickChunk(free, g, gpr)
		out |= c
		free &^= c
	}
	return out
}

func pickChunk(free uint64, g, gpr int) uint64 {
	if gpr&(gpr-1) == 0 {
		best, bestScore := uint64(0), 1<<30
		block := fullMask(gpr)
		for s := 0; s+gpr <= g; s += gpr {
			m := block << uint(s)
			if free&m != m {
				continue
			}
			score := 0
			if 2*gpr <= g {
				buddy := fullMask(2*gpr) << uint(s/(2*gpr)*(2*gpr))
				score = bits.OnesCount64(free & buddy)
			}
			if score < bestScore {
				best, bestScore = m, score
			}
		}
		if best != 0 {
			return best
		}
	}
	var out uint64
	for i := 0; i < gpr; i++ {
		b := free & -free
		out |= b
		free &^= b
	}
	return out
}

// minLeavesEmpty is the fewest leaves that hold n replicas of gpr GPUs of
// pool p on an empty fabric: Placement.MinLeaves.
func (t *topo) minLeavesEmpty(p, gpr, n, m int) int {
	po := &t.pools[p]
	if n*gpr <= po.gpus {
		return 1
	}
	perNode := po.gpus / gpr
	if !t.nvlMulti && m > 1 {
		perNode = perNode / m * m
	}
	k, left := 0, n
	for _, c := range po.leafNodes {
		if left <= 0 {
			break
		}
		slots := int(c) * perNode
		if t.nvlMulti && m > 1 {
			slots = slots / m * m
		}
		k++
		left -= slots
	}
	return k
}

// mayFit is a constant-time necessary condition for rq on v: enough idle
// nodes or free GPUs in some pool.
func (pl *placer) mayFit(v *view, rq *request) bool {
	for p := range pl.t.pools {
		po := &pl.t.pools[p]
		if (rq.model != "" && po.model != rq.model) || po.gpus < rq.gpr {
			continue
		}
		whole := rq.gpr == po.gpus && rq.m == 1
		doms := pl.t.roots
		if whole && !rq.scope.node && !rq.scope.nvlink && rq.within == topology.NoDomain && rq.scope.level < pl.t.levels[len(pl.t.levels)-1] {
			doms = pl.t.f.DomainsAt(rq.scope.level)
		}
		for _, r := range doms {
			if whole {
				if int(v.idle[p][r]) >= rq.n {
					return true
				}
			} else if int(v.freeG[p][r]) >= rq.n*rq.gpr {
				return true
			}
		}
	}
	return false
}

// mayFitEmpty reports whether rq could fit if every available node of v
// were idle (nodes down stay down).
func (pl *placer) mayFitEmpty(v *view, rq *request) bool {
	for p := range pl.t.pools {
		po := &pl.t.pools[p]
		if (rq.model != "" && po.model != rq.model) || po.gpus < rq.gpr {
			continue
		}
		up := 0
		for n := range pl.t.f.Nodes {
			if int(pl.t.nodePool[n]) == p && !v.st.Cordoned(topology.NodeID(n)) {
				up++
			}
		}
		if up*(po.gpus/rq.gpr) >= rq.n {
			return true
		}
	}
	return false
}
