package plan

import (
	"fmt"
	"sort"
	"strings"

	"gpucloud/internal/topology"
)

// GPU is the part of an accelerator the performance model needs. Peak rates
// are NVIDIA's dense (no sparsity) datasheet figures; MatmulEff is the one
// measured number per chip (see constants.go).
type GPU struct {
	Name    string   // canonical name, e.g. "A100-80GB"
	Aliases []string // lower-case names accepted on the command line
	// BF16TFLOPS and FP8TFLOPS are dense tensor-core peaks (0: no FP8).
	BF16TFLOPS float64
	FP8TFLOPS  float64
	// MemoryGiB is the memory the driver reports (nvidia-smi's total), in
	// GiB; a GPU sold as "80GB" has 80 GiB.
	MemoryGiB float64
	HBMGBps   float64 // HBM bandwidth, GB/s
	// NVLinkGBps is the NVLink bandwidth per GPU, both directions added
	// (600 for A100, 900 for H100), as NVIDIA quotes it.
	NVLinkGBps float64
	SMs        int
	// MatmulEff is the sustained fraction of BF16TFLOPS that the best large
	// GEMM reaches with the GPU at its power limit; see constants.go.
	MatmulEff float64
	// DefaultFabric is the fabric preset whose nodes this GPU usually sits in.
	DefaultFabric string
}

// GPUs is the catalog. Sources: NVIDIA A100, H100, H200 and HGX B200
// datasheets (dense BF16/FP8 tensor TFLOP/s, HBM size and bandwidth, NVLink
// bandwidth), SM counts from the architecture whitepapers (A100: 108,
// H100/H200 SXM: 132, B200: 148), memory as nvidia-smi reports it.
var GPUs = []GPU{
	{Name: "A100-40GB", Aliases: []string{"a100-40gb", "a100-40g", "a100-sxm4-40gb"},
		BF16TFLOPS: 312, MemoryGiB: 40, HBMGBps: 1555, NVLinkGBps: 600, SMs: 108,
		MatmulEff: effA100, DefaultFabric: "ndv4"},
	{Name: "A100-80GB", Aliases: []string{"a100-80gb", "a100", "a100-80g", "a100-sxm4-80gb"},
		BF16TFLOPS: 312, MemoryGiB: 80, HBMGBps: 2039, NVLinkGBps: 600, SMs: 108,
		MatmulEff: effA100, DefaultFabric: "ndv4"},
	{Name: "H100-80GB", Aliases: []string{"h100", "h100-sxm", "h100-80gb", "h100-sxm5-80gb"},
		BF16TFLOPS: 989, FP8TFLOPS: 1979, MemoryGiB: 79.6, HBMGBps: 3350, NVLinkGBps: 900, SMs: 132,
		MatmulEff: effHopper, DefaultFabric: "ndv5"},
	{Name: "H200-141GB", Aliases: []string{"h200", "h200-sxm", "h200-141gb"},
		BF16TFLOPS: 989, FP8TFLOPS: 1979, MemoryGiB: 140.4, HBMGBps: 4800, NVLinkGBps: 900, SMs: 132,
		MatmulEff: effHopper, DefaultFabric: "ndv5"},
	{Name: "B200-180GB", Aliases: []string{"b200", "b200-180gb", "b200-186gb"},
		BF16TFLOPS: 2250, FP8TFLOPS: 4500, MemoryGiB: 179, HBMGBps: 8000, NVLinkGBps: 1800, SMs: 148,
		MatmulEff: effB200, DefaultFabric: "gb200-nvl72"},
}

// GPUNames lists the accepted --gpu names.
func GPUNames() []string {
	var n []string
	for _, g := range GPUs {
		n = append(n, g.Aliases[0])
	}
	return n
}

// LookupGPU finds a GPU by any of its names, case-insensitively. Fabric
// descriptions name models like "H100-80GB" or "A100-SXM4-80GB"; both work.
func LookupGPU(name string) (GPU, error) {
	key := strings.ToLower(strings.TrimSpace(name))
	for _, g := range GPUs {
		if strings.EqualFold(g.Name, key) {
			return g, nil
		}
		for _, a := range g.Aliases {
			if a == key {
				return g, nil
			}
		}
	}
	return GPU{}, fmt.Errorf("unknown GPU %q (want one of %s)", name, strings.Join(GPUNames(), ", "))
}

// Cluster is the hardware the planner lays a job out on: one GPU model in
// nodes joined by NVLink, the nodes on an InfiniBand fabric.
type Cluster struct {
	GPU         GPU
	GPUsPerNode int
	// NVLinkGPUs is how many GPUs share one NVLink domain: 8 on an HGX
	// board, 72 on a GB200 NVL72 rack. Tensor parallelism stays inside it.
	NVLinkGPUs int
	// NICGBps is the InfiniBand bandwidth per GPU, one direction, GB/s
	// (rails x rail speed / GPUs per node).
	NICGBps float64
	// Source says where the node description came from.
	Source string
}

// ClusterFromClass builds a cluster from a fabric node class. gpu overrides
// the class's GPU model when non-empty.
func ClusterFromClass(c topology.NodeClass, nvlinkNodes int, gpu string, source string) (Cluster, error) {
	name := gpu
	if name == "" {
		name = c.GPUModel
	}
	g, err := LookupGPU(name)
	if err != nil {
		return Cluster{}, fmt.Errorf("%s: %w", source, err)
	}
	if c.GPUs < 1 {
		return Cluster{}, fmt.Errorf("%s: node class %q has no GPUs", source, c.Name)
	}
	if c.NVLinkGBps > 0 {
		g.NVLinkGBps = c.NVLinkGBps
	}
	rails := max(c.Rails, 1)
	nic := float64(rails) * c.RailGbps / 8 / float64(c.GPUs)
	if nic <= 0 {
		return Cluster{}, fmt.Errorf("%s: node class %q has no InfiniBand bandwidth (railGbps)", source, c.Name)
	}
	return Cluster{GPU: g, GPUsPerNode: c.GPUs, NVLinkGPUs: c.GPUs * max(nvlinkNodes, 1), NICGBps: nic, Source: source}, nil
}

// ClusterFromPreset uses a topology preset's node class (ndv4, ndv5,
// gb200-nvl72). gpu overrides the preset's GPU model when non-empty, keeping
// its nodes and network: "h200" on "ndv5" is an ND H200 v5-like fleet.
func ClusterFromPreset(preset, gpu string) (Cluster, error) {
	p, ok := topology.Presets[preset]
	if !ok {
		return Cluster{}, fmt.Errorf("unknown fabric preset %q (want one of %v)", preset, topology.PresetNames())
	}
	return ClusterFromClass(p.Class, p.NVLinkNodes, gpu, "preset "+preset)
}

// ClusterFromFabric reads the node description of a loaded fabric. All
// compute nodes must share one class, as the planner lays out one job on
// one kind of node.
func ClusterFromFabric(f *topology.Fabric, gpu string) (Cluster, error) {
	if len(f.Nodes) == 0 {
		return Cluster{}, fmt.Errorf("fabric %q has no nodes", f.Name)
	}
	used := map[int32]bool{}
	for _, n := range f.Nodes {
		used[n.Class] = true
	}
	if len(used) > 1 {
		var names []string
		for c := range used {
			names = append(names, f.Classes[c].Name)
		}
		sort.Strings(names)
		return Cluster{}, fmt.Errorf("fabric %q mixes node classes %s; plan one class at a time", f.Name, strings.Join(names, ", "))
	}
	c := f.Classes[f.Nodes[0].Class]
	nv := f.Nodes[0].NVLink
	nodes := 1
	if nv >= 0 && int(nv) < len(f.NVLinks) {
		nodes = len(f.NVLinks[nv].Nodes)
	}
	cl, err := ClusterFromClass(c, nodes, gpu, "fabric "+f.Name)
	if err != nil {
		return Cluster{}, err
	}
	return cl, nil
}

// DefaultCluster is the usual node for a GPU: its DefaultFabric preset's
// node with this GPU (DGX/HGX boards of 8 on NVSwitch, one InfiniBand rail
// per GPU: 200 Gb/s HDR for A100, 400 Gb/s NDR for H100 and H200).
func DefaultCluster(gpu string) (Cluster, error) {
	g, err := LookupGPU(gpu)
	if err != nil {
		return Cluster{}, err
	}
	return ClusterFromPreset(g.DefaultFabric, g.Name)
}
