package topology

import (
	"fmt"
	"sort"
)

// Preset describes a family of generated fleets: one node class on a
// non-blocking, rail-optimised fat tree.
type Preset struct {
	Name        string
	Description string
	Class       NodeClass
	// LeafNodes is how many nodes share one leaf switch per rail (the
	// scalable unit). With radix R a non-blocking leaf gives R/2 ports down.
	LeafNodes int
	// Radix is the port count of every switch.
	Radix int
	// NVLinkNodes is how many nodes share one NVLink domain (1 for an HGX
	// board, 18 trays for a GB200 NVL72 rack).
	NVLinkNodes int
	NodePrefix  string
}

// Presets are the generated fleets. The radices are those of the switches
// such fleets are built with: NVIDIA Quantum-2 QM9700 (64 ports of NDR
// 400 Gb/s) for H100 and GB200, Quantum QM8700 (40 ports of HDR 200 Gb/s)
// for A100. A non-blocking leaf splits its ports half down, half up, so a
// scalable unit is 32 (NDR) or 20 (HDR) nodes; a GB200 NVL72 rack of 18
// trays gets a leaf per rail of its own so that NVLink domains never
// straddle leaves.
var Presets = map[string]Preset{
	"ndv5": {
		Name: "ndv5", Description: "ND H100 v5-like: 8x H100 80GB on NVSwitch, 8x 400 Gb/s NDR rails per node",
		Class: NodeClass{Name: "nd-h100-v5", GPUModel: "H100-80GB", GPUs: 8, GPUMemoryGiB: 80, NVLinkGBps: 900,
			Rails: 8, RailGbps: 400},
		LeafNodes: 32, Radix: 64, NVLinkNodes: 1, NodePrefix: "ndv5",
	},
	"ndv4": {
		Name: "ndv4", Description: "ND A100 v4-like: 8x A100 80GB on NVSwitch, 8x 200 Gb/s HDR rails per node",
		Class: NodeClass{Name: "nd-a100-v4", GPUModel: "A100-80GB", GPUs: 8, GPUMemoryGiB: 80, NVLinkGBps: 600,
			Rails: 8, RailGbps: 200},
		LeafNodes: 20, Radix: 40, NVLinkNodes: 1, NodePrefix: "ndv4",
	},
	"gb200-nvl72": {
		Name: "gb200-nvl72", Description: "GB200 NVL72-like: racks of 18 trays x 4 B200 GPUs in one NVLink domain, 4x 400 Gb/s NDR rails per tray",
		Class: NodeClass{Name: "gb200-tray", GPUModel: "B200-186GB", GPUs: 4, GPUMemoryGiB: 186, NVLinkGBps: 1800,
			Rails: 4, RailGbps: 400},
		LeafNodes: 18, Radix: 64, NVLinkNodes: 18, NodePrefix: "gb200",
	},
}

// PresetNames lists the presets in order.
func PresetNames() []string {
	names := make([]string, 0, len(Presets))
	for n := range Presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Generate builds the preset fleet with the given number of GPUs.
func Generate(preset string, gpus int) (*Fabric, error) {
	p, ok := Presets[preset]
	if !ok {
		return nil, fmt.Errorf("unknown preset %q (want one of %v)", preset, PresetNames())
	}
	return p.Generate(gpus)
}

// maxPresetGPUs bounds generated fleets; far above any fleet built today.
const maxPresetGPUs = 1 << 22

// Generate builds a fleet of this preset with gpus GPUs on the smallest
// non-blocking fat tree that holds it: one leaf tier up to one scalable
// unit, two tiers up to Radix leaves, then blocks of Radix/2 leaves under
// spines, then pods of Radix/2 blocks, with the top tier's switches using
// all their ports downwards.
func (p Preset) Generate(gpus int) (*Fabric, error) {
	per := p.Class.GPUs
	if gpus < per || gpus%per != 0 {
		return nil, fmt.Errorf("preset %s: gpus must be a positive multiple of %d, got %d", p.Name, per, gpus)
	}
	if gpus > maxPresetGPUs {
		return nil, fmt.Errorf("preset %s: at most %d GPUs, got %d", p.Name, maxPresetGPUs, gpus)
	}
	nodes := gpus / per
	leaves := ceilDiv(nodes, p.LeafNodes)
	half := p.Radix / 2
	// groups[i] is how many children a domain of tier i+1 groups.
	var groups []int
	switch {
	case leaves == 1:
	case leaves <= p.Radix:
		groups = []int{p.Radix}
	default:
		groups = []int{half}
		capacity := half * p.Radix
		for capacity < leaves {
			groups = append(groups, half)
			capacity *= half
		}
		groups = append(groups, p.Radix)
	}
	if len(groups) > 3 {
		return nil, fmt.Errorf("preset %s: %d GPUs need more than four switch tiers", p.Name, gpus)
	}
	b := NewBuilder(fmt.Sprintf("%s-%d", p.Name, gpus))
	cls := b.AddClass(p.Class)
	rails := max(p.Class.Rails, 1)
	portGbps := p.Class.RailGbps

	// Levels from the top down: the cluster, then pods and blocks as the
	// tree needs them, each with the number of leaves one domain spans.
	levels := []Level{LevelCluster}
	span := []int{leaves}
	mid := []Level{LevelBlock, LevelPod}
	s := 1
	var midSpan []int
	for i := 0; i+1 < len(groups); i++ {
		s *= groups[i]
		midSpan = append(midSpan, s)
	}
	for i := len(midSpan) - 1; i >= 0; i-- {
		levels = append(levels, mid[i])
		span = append(span, midSpan[i])
	}
	width := max(len(fmt.Sprint(nodes-1)), 5)
	leafW := max(len(fmt.Sprint(leaves-1)), 4)
	counter := make([]int, len(levels))

	var build func(parent DomainID, lvlIdx, firstLeaf, nLeaves int, name string) error
	build = func(parent DomainID, lvlIdx, firstLeaf, nLeaves int, name string) error {
		if lvlIdx == len(levels) {
			return p.addLeaf(b, parent, cls, firstLeaf, nodes, width, leafW)
		}
		lvl := levels[lvlIdx]
		lastLeaf := min(firstLeaf+nLeaves, leaves)
		ports := 0 // uplink ports per rail arriving from below
		for l := firstLeaf; l < lastLeaf; l++ {
			ports += min(p.LeafNodes, nodes-l*p.LeafNodes)
		}
		sw := 0
		switch {
		case lvlIdx == 0 && len(groups) > 0:
			sw = rails * ceilDiv(ports, p.Radix) // top tier: all ports down
		case lvlIdx > 0:
			sw = rails * ceilDiv(ports, half)
		}
		up := 0.0
		if lvlIdx > 0 {
			up = float64(ports*rails) * portGbps
		}
		if name == "" {
			name = fmt.Sprintf("%s-%0*d", lvl, 3, counter[lvlIdx])
		}
		counter[lvlIdx]++
		id, err := b.AddDomain(Domain{Name: name, Level: lvl, Parent: parent, Switches: sw, SwitchPorts: p.Radix, UplinkGbps: up})
		if err != nil {
			return err
		}
		childSpan := 1
		if lvlIdx+1 < len(levels) {
			childSpan = span[lvlIdx+1]
		}
		for c := firstLeaf; c < lastLeaf; c += childSpan {
			if err := build(id, lvlIdx+1, c, childSpan, ""); err != nil {
				return err
			}
		}
		return nil
	}
	if err := build(NoDomain, 0, 0, leaves, "cluster"); err != nil {
		return nil, err
	}
	if p.NVLinkNodes > 1 {
		ids := make([]NodeID, 0, p.NVLinkNodes)
		for first := 0; first < nodes; first += p.NVLinkNodes {
			ids = ids[:0]
			for n := first; n < min(first+p.NVLinkNodes, nodes); n++ {
				ids = append(ids, NodeID(n))
			}
			if err := b.AddNVLinkDomain(fmt.Sprintf("rack-%0*d", leafW, first/p.NVLinkNodes), ids); err != nil {
				return nil, err
			}
		}
	}
	return b.Build()
}

func (p Preset) addLeaf(b *Builder, parent DomainID, cls int32, leaf, nodes, width, leafW int) error {
	first := leaf * p.LeafNodes
	n := min(p.LeafNodes, nodes-first)
	rails := max(p.Class.Rails, 1)
	up := 0.0
	if b.f.Domains[parent].Switches > 0 {
		up = float64(n*rails) * p.Class.RailGbps
	}
	id, err := b.AddDomain(Domain{Name: fmt.Sprintf("leaf-%0*d", leafW, leaf), Level: LevelLeaf, Parent: parent,
		Switches: rails, SwitchPorts: p.Radix, UplinkGbps: up})
	if err != nil {
		return err
	}
	for i := first; i < first+n; i++ {
		if _, err := b.AddNode(fmt.Sprintf("%s-%0*d", p.NodePrefix, width, i), cls, id); err != nil {
			return err
		}
	}
	return nil
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }
