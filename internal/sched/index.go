package sched

import (
	"math/bits"
	"slices"

	"gpucloud/internal/topology"
)

// topo is what the scheduler derives once from a fabric: pools of
// interchangeable nodes, the leaves under every domain and the layout of the
// per-domain histograms. It is immutable and shared by every view.
type topo struct {
	f           *topology.Fabric
	pools       []pool
	models      []string // distinct GPU models, sorted
	modelGPUs   []int    // GPUs per model
	nodePool    []int16  // per node: its pool
	histRow     []int32  // per domain: its histogram row, -1 for leaves
	nRows       int
	w           int // histogram columns: 0..the most pool nodes under one leaf
	levels      []topology.Level
	roots       []topology.DomainID
	leavesUnder [][]topology.DomainID // per domain: the leaves under it (itself for a leaf)
	leafNVL     [][]int32             // per leaf: the NVLink domains under it
	nvlMulti    bool                  // some NVLink domain spans several nodes
	maxNVLGPUs  int
	maxNodeGPUs int
	// maxNodesAt[l][p] is the most nodes of pool p in one domain of level l.
	maxNodesAt map[topology.Level][]int
}

// pool is a set of interchangeable nodes: same GPU model, same GPUs per
// node. A gang is placed inside one pool.
type pool struct {
	model     string
	modelIdx  int
	gpus      int // per node
	nodes     int
	leafNodes []int32 // this pool's nodes per leaf, descending (for MinLeaves)
}

func newTopo(f *topology.Fabric) *topo {
	t := &topo{f: f, nodePool: make([]int16, len(f.Nodes))}
	type key struct {
		model string
		gpus  int
	}
	var keys []key
	seen := map[key]bool{}
	for i := range f.Nodes {
		c := f.Class(topology.NodeID(i))
		k := key{c.GPUModel, c.GPUs}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
		t.maxNodeGPUs = max(t.maxNodeGPUs, c.GPUs)
	}
	slices.SortFunc(keys, func(a, b key) int {
		if a.model != b.model {
			if a.model < b.model {
				return -1
			}
			return 1
		}
		return a.gpus - b.gpus
	})
	idx := map[key]int16{}
	for i, k := range keys {
		idx[k] = int16(i)
		if len(t.models) == 0 || t.models[len(t.models)-1] != k.model {
			t.models = append(t.models, k.model)
			t.modelGPUs = append(t.modelGPUs, 0)
		}
		t.pools = append(t.pools, pool{model: k.model, modelIdx: len(t.models) - 1, gpus: k.gpus})
	}
	nd := len(f.Domains)
	perLeaf := make([][]int32, len(t.pools))
	for p := range perLeaf {
		perLeaf[p] = make([]int32, nd)
	}
	for i := range f.Nodes {
		c := f.Class(topology.NodeID(i))
		p := idx[key{c.GPUModel, c.GPUs}]
		t.nodePool[i] = p
		t.pools[p].nodes++
		t.modelGPUs[t.pools[p].modelIdx] += c.GPUs
		perLeaf[p][f.Nodes[i].Leaf]++
	}
	for p := range t.pools {
		for _, l := range f.DomainsAt(topology.LevelLeaf) {
			if c := perLeaf[p][l]; c > 0 {
				t.pools[p].leafNodes = append(t.pools[p].leafNodes, c)
				t.w = max(t.w, int(c))
			}
		}
		slices.SortFunc(t.pools[p].leafNodes, func(a, b int32) int { return int(b - a) })
	}
	t.histRow = make([]int32, nd)
	t.leavesUnder = make([][]topology.DomainID, nd)
	for d := range f.Domains {
		if f.Domains[d].Level == topology.LevelLeaf {
			t.histRow[d] = -1
		} else {
			t.histRow[d] = int32(t.nRows)
			t.nRows++
		}
		if f.Domains[d].Parent == topology.NoDomain {
			t.roots = append(t.roots, topology.DomainID(d))
		}
	}
	for _, l := range f.DomainsAt(topology.LevelLeaf) {
		for d := l; d != topology.NoDomain; d = f.Domains[d].Parent {
			t.leavesUnder[d] = append(t.leavesUnder[d], l)
		}
	}
	t.levels = f.Levels()
	t.maxNodesAt = map[topology.Level][]int{}
	for _, l := range t.levels {
		most := make([]int, len(t.pools))
		for _, d := range f.DomainsAt(l) {
			for p := range t.pools {
				n := 0
				for _, leaf := range t.leavesUnder[d] {
					n += int(perLeaf[p][leaf])
				}
				most[p] = max(most[p], n)
			}
		}
		t.maxNodesAt[l] = most
	}
	t.leafNVL = make([][]int32, nd)
	for v, nv := range f.NVLinks {
		l := f.Nodes[nv.Nodes[0]].Leaf
		t.leafNVL[l] = append(t.leafNVL[l], int32(v))
		g := 0
		for _, n := range nv.Nodes {
			g += f.NodeGPUs(n)
		}
		t.maxNVLGPUs = max(t.maxNVLGPUs, g)
		if len(nv.Nodes) > 1 {
			t.nvlMulti = true
		}
	}
	return t
}

func (t *topo) level(d topology.DomainID) topology.Level { return t.f.Domains[d].Level }

// effectiveLevel maps a required level onto the fabric: the lowest level
// present at or above l (as Fabric.Ancestor does), or the top level.
func (t *topo) effectiveLevel(l topology.Level) topology.Level {
	if l < topology.LevelLeaf {
		return l
	}
	for _, x := range t.levels {
		if x >= l {
			return x
		}
	}
	return t.levels[len(t.levels)-1]
}

// view is a topology.State with the indexes the placer needs, kept in step
// with every change in O(depth):
//   - per pool and domain: idle nodes (every GPU free) and free GPUs;
//   - per pool and non-leaf domain: a histogram of its leaves by idle
//     nodes, so the fewest leaves that hold a gang is read in O(leaf width);
//   - per pool and free-GPU count: a bitset of nodes with exactly that many
//     free GPUs, so a best-fit node is a few word operations away.
//
// Cordoned nodes count as having nothing free, as in topology.State.
type view struct {
	t      *topo
	st     *topology.State
	idle   [][]int32 // [pool][domain]
	freeG  [][]int32 // [pool][domain]
	hist   [][]int32 // [pool][row*(w+1)+idle nodes in the leaf]
	bucket [][]bitset
	// epoch counts the changes that can add capacity (releases, uncordons):
	// a placement that failed at this epoch still fails. fails memoises
	// failed placements by shape number (Scheduler.shapeNo).
	epoch uint64
	fails []failMemo

	// mirror, when set, is the hold view of the standing reservation: it
	// repeats every change made here except on the GPUs in hold (the
	// shadow), which it keeps taken. Clones have neither.
	mirror *view
	hold   []uint64 // per node
}

func newView(t *topo, st *topology.State) *view {
	v := &view{t: t, st: st}
	nd := len(t.f.Domains)
	cols := t.w + 1
	for p := range t.pools {
		v.idle = append(v.idle, make([]int32, nd))
		v.freeG = append(v.freeG, make([]int32, nd))
		h := make([]int32, t.nRows*cols)
		for d := range nd {
			if r := t.histRow[d]; r >= 0 {
				h[int(r)*cols] = int32(len(t.leavesUnder[d]))
			}
		}
		v.hist = append(v.hist, h)
		bs := make([]bitset, t.pools[p].gpus)
		for i := range bs {
			bs[i] = newBitset(len(t.f.Nodes))
		}
		v.bucket = append(v.bucket, bs)
	}
	for n := range t.f.Nodes {
		free, idle := v.contrib(topology.NodeID(n))
		v.update(topology.NodeID(n), 0, false, free, idle)
	}
	return v
}

// contrib is what node n adds to the indexes: its free GPUs and whether it
// is idle; nothing when cordoned.
func (v *view) contrib(n topology.NodeID) (int, bool) {
	if v.st.Cordoned(n) {
		return 0, false
	}
	c := bits.OnesCount64(v.st.FreeMask(n))
	return c, c == v.t.pools[v.t.nodePool[n]].gpus
}

func (v *view) update(n topology.NodeID, f0 int, i0 bool, f1 int, i1 bool) {
	p := v.t.nodePool[n]
	doms := v.t.f.Domains
	leaf := v.t.f.Nodes[n].Leaf
	if df := int32(f1 - f0); df != 0 {
		fg := v.freeG[p]
		for d := leaf; d != topology.NoDomain; d = doms[d].Parent {
			fg[d] += df
		}
	}
	if i0 != i1 {
		delta := int32(1)
		if !i1 {
			delta = -1
		}
		idle, hist, cols := v.idle[p], v.hist[p], int32(v.t.w+1)
		x := idle[leaf]
		idle[leaf] += delta
		for d := doms[leaf].Parent; d != topology.NoDomain; d = doms[d].Parent {
			idle[d] += delta
			row := v.t.histRow[d] * cols
			hist[row+x]--
			hist[row+x+delta]++
		}
	}
	if f0 != f1 {
		if f0 > 0 {
			v.bucket[p][f0-1].clear(int(n))
		}
		if f1 > 0 {
			v.bucket[p][f1-1].set(int(n))
		}
	}
}

func (v *view) alloc(n topology.NodeID, mask uint64) error {
	f0, i0 := v.contrib(n)
	if err := v.st.Allocate(n, mask); err != nil {
		return err
	}
	f1, i1 := v.contrib(n)
	v.update(n, f0, i0, f1, i1)
	if v.mirror != nil {
		if m := mask &^ v.hold[n]; m != 0 && !v.mirror.st.Cordoned(n) {
			_ = v.mirror.alloc(n, m)
		}
	}
	return nil
}

func (v *view) release(n topology.NodeID, mask uint64) error {
	f0, i0 := v.contrib(n)
	if err := v.st.Release(n, mask); err != nil {
		return err
	}
	f1, i1 := v.contrib(n)
	v.update(n, f0, i0, f1, i1)
	v.epoch++
	if v.mirror != nil {
		if m := mask &^ v.hold[n]; m != 0 {
			_ = v.mirror.release(n, m)
		}
	}
	return nil
}

func (v *view) cordon(n topology.NodeID, c bool) {
	f0, i0 := v.contrib(n)
	v.st.SetCordoned(n, c)
	f1, i1 := v.contrib(n)
	v.update(n, f0, i0, f1, i1)
	if !c {
		v.epoch++
	}
	if v.mirror != nil {
		v.mirror.cordon(n, c)
	}
}

func (v *view) allocAll(nodes []NodeAlloc) error {
	for i, a := range nodes {
		if err := v.alloc(a.Node, a.GPUs); err != nil {
			for _, b := range nodes[:i] {
				_ = v.release(b.Node, b.GPUs)
			}
			return err
		}
	}
	return nil
}

func (v *view) releaseAll(nodes []NodeAlloc) {
	for _, a := range nodes {
		// The scheduler only releases what it allocated; an error here
		// would be a bookkeeping bug that Check reports.
		_ = v.release(a.Node, a.GPUs)
	}
}

// failed is the memo of a failed placement of shape id still true at the
// view's epoch, or nil.
func (v *view) failed(id int32) *failMemo {
	if int(id) < len(v.fails) && v.fails[id].valid && v.fails[id].epoch == v.epoch {
		return &v.fails[id]
	}
	return nil
}

func (v *view) setFailed(id int32, ms miss) {
	for int(id) >= len(v.fails) {
		v.fails = append(v.fails, failMemo{})
	}
	v.fails[id] = failMemo{v.epoch, ms, true}
}

// anyFree says whether any GPU of the view is free (cordoned nodes count
// none).
func (v *view) anyFree() bool {
	for p := range v.freeG {
		for _, r := range v.t.roots {
			if v.freeG[p][r] > 0 {
				return true
			}
		}
	}
	return false
}

// cloneInto copies v into dst, reusing dst's memory (a reservation's walk
// and hold view are remade often on a big fleet, and fresh copies of a
// 131,072-GPU state were a fifth of the time in garbage collection); a nil
// dst gets a fresh clone. Like clone, the copy has no mirror.
func (v *view) cloneInto(dst *view) *view {
	if dst == nil || dst.t != v.t {
		return v.clone()
	}
	dst.st = v.st.CloneInto(dst.st)
	dst.epoch = v.epoch
	dst.fails = dst.fails[:0]
	dst.mirror, dst.hold = nil, nil
	for p := range v.idle {
		copy(dst.idle[p], v.idle[p])
		copy(dst.freeG[p], v.freeG[p])
		copy(dst.hist[p], v.hist[p])
		for i := range v.bucket[p] {
			copy(dst.bucket[p][i].words, v.bucket[p][i].words)
			copy(dst.bucket[p][i].sum, v.bucket[p][i].sum)
		}
	}
	return dst
}

func (v *view) clone() *view {
	c := &view{t: v.t, st: v.st.Clone(), epoch: v.epoch}
	for p := range v.idle {
		c.idle = append(c.idle, slices.Clone(v.idle[p]))
		c.freeG = append(c.freeG, slices.Clone(v.freeG[p]))
		c.hist = append(c.hist, slices.Clone(v.hist[p]))
		bs := make([]bitset, len(v.bucket[p]))
		for i := range bs {
			bs[i] = v.bucket[p][i].clone()
		}
		c.bucket = append(c.bucket, bs)
	}
	return c
}

// histOf returns the histogram row of non-leaf domain d in pool p: entry c
// is the number of leaves under d with c idle nodes.
func (v *view) histOf(p int, d topology.DomainID) []int32 {
	cols := v.t.w + 1
	r := int(v.t.histRow[d]) * cols
	return v.hist[p][r : r+cols]
}

// minLeaves is the fewest leaves under d whose idle nodes add up to need,
// or 0 when d has fewer than need idle nodes.
func (v *view) minLeaves(p int, d topology.DomainID, need int) int {
	if int(v.idle[p][d]) < need {
		return 0
	}
	if v.t.histRow[d] < 0 {
		return 1
	}
	h := v.histOf(p, d)
	k := 0
	for c := len(h) - 1; c >= 1 && need > 0; c-- {
		n := int(h[c])
		if n == 0 {
			continue
		}
		take := min(n, (need+c-1)/c)
		k += take
		need -= take * c
	}
	return k
}
