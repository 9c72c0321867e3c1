package api

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"

	"gpucloud/internal/topology"
)

// NodeGPUs is one node of an expanded placement.
type NodeGPUs struct {
	Node string
	GPUs uint64 // bitmask of GPU indices
}

// GPUList writes a GPU mask as an index list: "0-7", "0,2-3".
func GPUList(mask uint64) string {
	var b strings.Builder
	for mask != 0 {
		lo := bits.TrailingZeros64(mask)
		hi := lo
		for hi+1 < 64 && mask&(1<<uint(hi+1)) != 0 {
			hi++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(lo))
		if hi > lo {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(hi))
		}
		for i := lo; i <= hi; i++ {
			mask &^= 1 << uint(i)
		}
	}
	return b.String()
}

// ParseGPUList reads an index list written by GPUList.
func ParseGPUList(s string) (uint64, error) {
	var mask uint64
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 || a > 63 {
			return 0, fmt.Errorf("GPU list %q: bad index %q", s, lo)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a || b > 63 {
				return 0, fmt.Errorf("GPU list %q: bad range %q", s, part)
			}
		}
		for i := a; i <= b; i++ {
			mask |= 1 << uint(i)
		}
	}
	return mask, nil
}

// CompactPlacement groups runs of nodes with the same GPUs, in order.
func CompactPlacement(nodes []NodeGPUs) []PlacementGroup {
	var groups []PlacementGroup
	for i := 0; i < len(nodes); {
		j := i
		for j < len(nodes) && nodes[j].GPUs == nodes[i].GPUs {
			j++
		}
		names := make([]string, 0, j-i)
		for _, n := range nodes[i:j] {
			names = append(names, n.Node)
		}
		groups = append(groups, PlacementGroup{Hosts: topology.CompressHostlist(names), GPUs: GPUList(nodes[i].GPUs)})
		i = j
	}
	return groups
}

// Expand lists the nodes of a placement in rank order.
func (p *Placement) Expand() ([]NodeGPUs, error) {
	out := make([]NodeGPUs, 0, p.Nodes)
	for i, g := range p.Groups {
		names, err := topology.ExpandHostlist(g.Hosts)
		if err != nil {
			return nil, fmt.Errorf("placement group %d: %w", i, err)
		}
		mask, err := ParseGPUList(g.GPUs)
		if err != nil {
			return nil, fmt.Errorf("placement group %d: %w", i, err)
		}
		for _, n := range names {
			out = append(out, NodeGPUs{Node: n, GPUs: mask})
		}
	}
	return out, nil
}

// BuildAssignments lays the ranks of a job generation over its expanded
// placement: ranks follow the node order, and within a node the GPUs
// ascending. With launch per-gpu every GPU is a rank; with per-node every
// replica (gpusPerReplica GPUs of one node) is a rank. The result is
// index-aligned with nodes.
func BuildAssignments(j *Job, nodes []NodeGPUs, masterAddr string) []Assignment {
	per := j.Spec.GPUsPerReplica
	if j.Spec.Launch == LaunchPerGPU || per < 1 {
		per = 1
	}
	out := make([]Assignment, len(nodes))
	rank := 0
	for i, n := range nodes {
		gpus := maskIndices(n.GPUs)
		var procs []Process
		for k := 0; k < len(gpus); k += per {
			end := min(k+per, len(gpus))
			if len(gpus)-end < per && len(gpus)-end > 0 {
				end = len(gpus) // leftovers join the last process
			}
			procs = append(procs, Process{Rank: rank, LocalRank: len(procs), GPUs: gpus[k:end]})
			rank++
			if end == len(gpus) {
				break
			}
		}
		out[i] = Assignment{
			Job: j.Metadata.ID, Name: j.Metadata.Name, Tenant: j.Metadata.Tenant,
			Generation: j.Status.Generation, Launch: j.Spec.Launch,
			NodeRank: i, Nodes: len(nodes), Processes: procs,
			Command: j.Spec.Command, Env: j.Spec.Env, WorkingDir: j.Spec.WorkingDir,
			MasterAddr: masterAddr, MasterPort: j.Status.MasterPort,
		}
		if len(procs) > 0 {
			out[i].FirstRank = procs[0].Rank
		}
	}
	for i := range out {
		out[i].WorldSize = rank
	}
	return out
}

func maskIndices(m uint64) []int {
	out := make([]int, 0, bits.OnesCount64(m))
	for m != 0 {
		i := bits.TrailingZeros64(m)
		out = append(out, i)
		m &^= 1 << uint(i)
	}
	return out
}
