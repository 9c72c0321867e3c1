package topology

import (
	"fmt"
	"slices"
)

// NodeID indexes Fabric.Nodes.
type NodeID int32

// DomainID indexes Fabric.Domains. NoDomain marks the parent of a root.
type DomainID int32

// NoDomain is the parent of a root domain.
const NoDomain DomainID = -1

// NodeClass is the hardware shared by many nodes. Nodes point at a class so
// that a 16,384-node fleet stores its hardware description once.
type NodeClass struct {
	Name         string  `json:"name" yaml:"name"`
	GPUModel     string  `json:"gpuModel" yaml:"gpuModel"`
	GPUs         int     `json:"gpus" yaml:"gpus"`
	GPUMemoryGiB int     `json:"gpuMemoryGiB,omitempty" yaml:"gpuMemoryGiB,omitempty"`
	NVLinkGBps   float64 `json:"nvlinkGBps,omitempty" yaml:"nvlinkGBps,omitempty"` // per GPU, both directions
	Rails        int     `json:"rails,omitempty" yaml:"rails,omitempty"`           // InfiniBand HCAs on the compute fabric
	RailGbps     float64 `json:"railGbps,omitempty" yaml:"railGbps,omitempty"`     // per HCA port
	// GPURail[i] is the rail (HCA) that serves GPU i. Empty means GPU i uses
	// rail i mod Rails, as on ND H100 v5 and DGX H100.
	GPURail []int `json:"gpuRail,omitempty" yaml:"gpuRail,omitempty"`
	// HCAs names the InfiniBand devices of the rails (mlx5_0 ...), when known.
	HCAs []string `json:"hcas,omitempty" yaml:"hcas,omitempty"`
}

// RailOf returns the rail (HCA index) serving GPU g of a node of this class.
func (c *NodeClass) RailOf(g int) int {
	if g < len(c.GPURail) {
		return c.GPURail[g]
	}
	if c.Rails == 0 {
		return 0
	}
	return g % c.Rails
}

// Node is one GPU server.
type Node struct {
	Name   string
	Class  int32    // index into Fabric.Classes
	Leaf   DomainID // the leaf domain the node hangs from
	NVLink int32    // index into Fabric.NVLinks
}

// Domain is a group of nodes in the switch tree: a leaf (the nodes behind one
// leaf switch per rail), a block of leaves under a spine group, a pod, a
// cluster, a zone, a region.
type Domain struct {
	Name   string
	Level  Level
	Parent DomainID
	// Switches is the number of physical switches at this domain's own tier
	// (8 rail leaves for one scalable unit of ND H100 v5-like nodes; the
	// spines of a block). Zero for purely logical domains such as a region.
	Switches    int
	SwitchNames []string // names when the source knows them (ibnetdiscover, Slurm)
	SwitchPorts int      // radix of those switches, when known
	// UplinkGbps is the total bandwidth from this domain to its parent. Zero
	// for a root or when unknown.
	UplinkGbps float64
}

// NVLinkDomain is a set of GPUs joined by NVLink/NVSwitch: one HGX board, or
// a whole rack for GB200 NVL72.
type NVLinkDomain struct {
	Name  string
	Nodes []NodeID
}

// Fabric is the datacenter as data. It is immutable once built: allocations
// live in State.
type Fabric struct {
	Name    string
	Classes []NodeClass
	Nodes   []Node
	Domains []Domain
	NVLinks []NVLinkDomain
	// Warnings lists what a loader saw and set aside rather than merged
	// silently: CAs that are not compute hosts, unknown keys, and the like.
	Warnings []string

	byLevel    [numLevels][]DomainID
	children   [][]DomainID
	leafNodes  [][]NodeID // per domain, only filled for leaf domains
	tier       []int8     // switch tier of each domain: 0 leaf, 1 spine, 2 core; -1 without switches
	nodeByName map[string]NodeID
	domByName  map[string]DomainID
	gpus       int
}

// NumGPUs is the number of GPUs in the fabric.
func (f *Fabric) NumGPUs() int { return f.gpus }

// Class returns the hardware class of node n.
func (f *Fabric) Class(n NodeID) *NodeClass { return &f.Classes[f.Nodes[n].Class] }

// NodeGPUs returns the number of GPUs of node n.
func (f *Fabric) NodeGPUs(n NodeID) int { return f.Classes[f.Nodes[n].Class].GPUs }

// NodeByName finds a node.
func (f *Fabric) NodeByName(name string) (NodeID, bool) {
	id, ok := f.nodeByName[name]
	return id, ok
}

// DomainByName finds a domain.
func (f *Fabric) DomainByName(name string) (DomainID, bool) {
	id, ok := f.domByName[name]
	return id, ok
}

// DomainsAt lists the domains of a level, in ID order.
func (f *Fabric) DomainsAt(l Level) []DomainID { return f.byLevel[l] }

// Children lists the child domains of d, in ID order.
func (f *Fabric) Children(d DomainID) []DomainID { return f.children[d] }

// LeafNodes lists the nodes of a leaf domain, in ID order.
func (f *Fabric) LeafNodes(d DomainID) []NodeID { return f.leafNodes[d] }

// Roots lists the domains without a parent.
func (f *Fabric) Roots() []DomainID {
	var r []DomainID
	for i := range f.Domains {
		if f.Domains[i].Parent == NoDomain {
			r = append(r, DomainID(i))
		}
	}
	return r
}

// Ancestor returns the domain at level l (or the nearest level above it that
// exists on the path) containing node n, and false when the path to the root
// has no domain at or above l.
func (f *Fabric) Ancestor(n NodeID, l Level) (DomainID, bool) {
	for d := f.Nodes[n].Leaf; d != NoDomain; d = f.Domains[d].Parent {
		if f.Domains[d].Level >= l {
			return d, true
		}
	}
	return NoDomain, false
}

// Levels lists the domain levels present, bottom-up.
func (f *Fabric) Levels() []Level {
	var ls []Level
	for l := LevelLeaf; l < numLevels; l++ {
		if len(f.byLevel[l]) > 0 {
			ls = append(ls, l)
		}
	}
	return ls
}

// Tier returns the switch tier of a domain's switches counted from the leaves
// (0 leaf, 1 spine, 2 core, ...), or -1 when the domain has none.
func (f *Fabric) Tier(d DomainID) int { return int(f.tier[d]) }

// TierName names a switch tier.
func TierName(t int) string {
	switch t {
	case 0:
		return "leaf"
	case 1:
		return "spine"
	case 2:
		return "core"
	}
	return fmt.Sprintf("tier%d", t+1)
}

// Builder assembles a Fabric and checks it. Loaders use it so that every
// format ends in the same checks.
type Builder struct {
	f       Fabric
	classBy map[string]int32
	errs    []error
}

// NewBuilder starts a fabric with the given name.
func NewBuilder(name string) *Builder {
	return &Builder{
		f:       Fabric{Name: name, nodeByName: map[string]NodeID{}, domByName: map[string]DomainID{}},
		classBy: map[string]int32{},
	}
}

// Warn records something the loader set aside.
func (b *Builder) Warn(format string, args ...any) {
	b.f.Warnings = append(b.f.Warnings, fmt.Sprintf(format, args...))
}

// AddClass registers hardware shared by nodes and returns its index. Adding a
// class with a name already known returns the existing index.
func (b *Builder) AddClass(c NodeClass) int32 {
	if i, ok := b.classBy[c.Name]; ok {
		return i
	}
	i := int32(len(b.f.Classes))
	b.f.Classes = append(b.f.Classes, c)
	b.classBy[c.Name] = i
	return i
}

// ClassIndex finds a class by name.
func (b *Builder) ClassIndex(name string) (int32, bool) {
	i, ok := b.classBy[name]
	return i, ok
}

// AddDomain adds a domain under parent (NoDomain for a root). Parents must be
// added before their children.
func (b *Builder) AddDomain(d Domain) (DomainID, error) {
	if d.Name == "" {
		return NoDomain, fmt.Errorf("domain without a name")
	}
	if _, dup := b.f.domByName[d.Name]; dup {
		return NoDomain, fmt.Errorf("domain %q defined twice", d.Name)
	}
	if d.Level < LevelLeaf || d.Level >= numLevels {
		return NoDomain, fmt.Errorf("domain %q: level %s is not a switch level", d.Name, d.Level)
	}
	if d.Parent != NoDomain {
		if int(d.Parent) >= len(b.f.Domains) || d.Parent < 0 {
			return NoDomain, fmt.Errorf("domain %q: parent %d does not exist", d.Name, d.Parent)
		}
		if p := b.f.Domains[d.Parent]; p.Level <= d.Level {
			return NoDomain, fmt.Errorf("domain %q (%s) cannot sit under %q (%s)", d.Name, d.Level, p.Name, p.Level)
		}
	}
	if len(d.SwitchNames) > 0 && d.Switches == 0 {
		d.Switches = len(d.SwitchNames)
	}
	id := DomainID(len(b.f.Domains))
	b.f.Domains = append(b.f.Domains, d)
	b.f.domByName[d.Name] = id
	return id, nil
}

// Reserve sizes the node tables for n more nodes, so that a loader that knows
// the count up front does not regrow them.
func (b *Builder) Reserve(n int) {
	b.f.Nodes = slices.Grow(b.f.Nodes, n)
	if len(b.f.nodeByName) == 0 && n > 0 {
		b.f.nodeByName = make(map[string]NodeID, n)
	}
}

// AddNode adds a node of class under a leaf domain.
func (b *Builder) AddNode(name string, class int32, leaf DomainID) (NodeID, error) {
	if name == "" {
		return 0, fmt.Errorf("node without a name")
	}
	if prev, dup := b.f.nodeByName[name]; dup {
		return 0, fmt.Errorf("node %q is under both %q and %q", name,
			b.f.Domains[b.f.Nodes[prev].Leaf].Name, b.f.Domains[leaf].Name)
	}
	if leaf < 0 || int(leaf) >= len(b.f.Domains) || b.f.Domains[leaf].Level != LevelLeaf {
		return 0, fmt.Errorf("node %q: domain %d is not a leaf", name, leaf)
	}
	if class < 0 || int(class) >= len(b.f.Classes) {
		return 0, fmt.Errorf("node %q: unknown node class %d", name, class)
	}
	id := NodeID(len(b.f.Nodes))
	b.f.Nodes = append(b.f.Nodes, Node{Name: name, Class: class, Leaf: leaf, NVLink: -1})
	b.f.nodeByName[name] = id
	return id, nil
}

// AddNVLinkDomain joins nodes into one multi-node NVLink domain (a GB200
// NVL72 rack). Nodes left out get a single-node domain of their own.
func (b *Builder) AddNVLinkDomain(name string, nodes []NodeID) error {
	if len(nodes) == 0 {
		return fmt.Errorf("nvlink domain %q has no nodes", name)
	}
	idx := int32(len(b.f.NVLinks))
	leaf := b.f.Nodes[nodes[0]].Leaf
	for _, n := range nodes {
		nd := &b.f.Nodes[n]
		if nd.NVLink >= 0 {
			return fmt.Errorf("node %q is in nvlink domains %q and %q", nd.Name, b.f.NVLinks[nd.NVLink].Name, name)
		}
		if nd.Leaf != leaf {
			return fmt.Errorf("nvlink domain %q spans leaves %q and %q; it must sit under one leaf",
				name, b.f.Domains[leaf].Name, b.f.Domains[nd.Leaf].Name)
		}
		nd.NVLink = idx
	}
	b.f.NVLinks = append(b.f.NVLinks, NVLinkDomain{Name: name, Nodes: slices.Clone(nodes)})
	return nil
}

// Build checks the fabric and computes its indexes.
func (b *Builder) Build() (*Fabric, error) {
	f := &b.f
	if len(f.Nodes) == 0 {
		return nil, fmt.Errorf("fabric %q has no nodes", f.Name)
	}
	for i := range f.Classes {
		c := &f.Classes[i]
		if c.GPUs < 1 || c.GPUs > 64 {
			return nil, fmt.Errorf("node class %q: gpus must be between 1 and 64, got %d", c.Name, c.GPUs)
		}
		for g, r := range c.GPURail {
			if r < 0 || (c.Rails > 0 && r >= c.Rails) {
				return nil, fmt.Errorf("node class %q: gpuRail[%d]=%d is not a rail (rails: %d)", c.Name, g, r, c.Rails)
			}
		}
	}
	// Nodes outside a multi-node NVLink domain get one of their own. Their
	// member lists share one backing array and their names the node's
	// string, so a 16,384-node fleet costs two allocations here, not 32k.
	singles := 0
	for i := range f.Nodes {
		if f.Nodes[i].NVLink < 0 {
			singles++
		}
	}
	members := make([]NodeID, 0, singles)
	f.NVLinks = slices.Grow(f.NVLinks, singles)
	for i := range f.Nodes {
		if f.Nodes[i].NVLink < 0 {
			f.Nodes[i].NVLink = int32(len(f.NVLinks))
			members = append(members, NodeID(i))
			f.NVLinks = append(f.NVLinks, NVLinkDomain{Name: f.Nodes[i].Name, Nodes: members[len(members)-1 : len(members) : len(members)]})
		}
		f.gpus += f.Classes[f.Nodes[i].Class].GPUs
	}
	for l := range f.byLevel {
		f.byLevel[l] = nil
	}
	f.children = make([][]DomainID, len(f.Domains))
	f.leafNodes = make([][]NodeID, len(f.Domains))
	for i := range f.Domains {
		d := &f.Domains[i]
		f.byLevel[d.Level] = append(f.byLevel[d.Level], DomainID(i))
		if d.Parent != NoDomain {
			f.children[d.Parent] = append(f.children[d.Parent], DomainID(i))
		}
	}
	for i := range f.Nodes {
		l := f.Nodes[i].Leaf
		f.leafNodes[l] = append(f.leafNodes[l], NodeID(i))
	}
	for _, d := range f.byLevel[LevelLeaf] {
		if len(f.leafNodes[d]) == 0 {
			return nil, fmt.Errorf("leaf %q has no nodes", f.Domains[d].Name)
		}
	}
	for i := range f.Domains {
		if f.Domains[i].Level > LevelLeaf && len(f.children[i]) == 0 {
			return nil, fmt.Errorf("%s %q has nothing under it", f.Domains[i].Level, f.Domains[i].Name)
		}
	}
	f.computeTiers()
	return f, nil
}

// computeTiers numbers switch tiers by height above the leaves, counting only
// domains that have switches, so a two-tier tree reads leaf/spine whatever
// the logical levels are called.
func (f *Fabric) computeTiers() {
	f.tier = make([]int8, len(f.Domains))
	height := make([]int8, len(f.Domains))
	// Children have larger IDs than their parents, so a reverse pass sees
	// every child before its parent.
	for i := len(f.Domains) - 1; i >= 0; i-- {
		h := int8(-1)
		for _, c := range f.children[i] {
			h = max(h, height[c])
		}
		if f.Domains[i].Switches > 0 {
			h++
			f.tier[i] = h
		} else {
			f.tier[i] = -1
		}
		height[i] = h
	}
}
