// Package health decides whether a node is fit to run jobs: it compares the
// GPUs and InfiniBand ports against what the agent found at start (a GPU
// gone, an NVML error, uncorrectable ECC errors, critical Xids, NVLinks or
// HCA ports down) and runs the operator's health script, as Azure's node
// health checks (aznhc) and LBNL NHC do. Any problem is a cordon reason.
package health

import (
	"fmt"
	"slices"
	"strings"

	"gpucloud/internal/agent/gpu"
	"gpucloud/internal/agent/ib"
)

// Problem is one failed check.
type Problem struct {
	Check   string `json:"check"` // gpu, infiniband, script
	Message string `json:"message"`
	// GPU is the index of the GPU at fault; -1 for the node as a whole.
	GPU int `json:"gpu"`
}

func (p Problem) String() string { return p.Check + ": " + p.Message }

// Report is the outcome of one round of checks.
type Report struct {
	Problems []Problem `json:"problems,omitempty"`
}

// Healthy reports whether no check failed.
func (r Report) Healthy() bool { return len(r.Problems) == 0 }

// UnhealthyGPUs lists the indices of the GPUs at fault, ascending.
func (r Report) UnhealthyGPUs() []int {
	var out []int
	for _, p := range r.Problems {
		if p.GPU >= 0 && !slices.Contains(out, p.GPU) {
			out = append(out, p.GPU)
		}
	}
	slices.Sort(out)
	return out
}

// Reason is the cordon reason: every problem, in check order, joined.
func (r Report) Reason() string {
	var parts []string
	for _, p := range r.Problems {
		if s := p.String(); !slices.Contains(parts, s) {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, "; ")
}

// ignoredXIDs are the Xids caused by the application rather than the
// hardware (the same set NVIDIA's Kubernetes device plugin ignores): a
// user's out-of-bounds access must not cordon a node.
var ignoredXIDs = map[uint64]bool{13: true, 31: true, 43: true, 45: true, 68: true, 109: true}

// xidMeaning names the common hardware Xids (NVIDIA's Xid catalogue).
var xidMeaning = map[uint64]string{
	48:  "double-bit ECC error",
	63:  "ECC page retirement or row remapping event",
	64:  "ECC page retirement or row remapping failure",
	74:  "NVLink error",
	79:  "GPU has fallen off the bus",
	92:  "high single-bit ECC error rate",
	94:  "contained ECC error",
	95:  "uncontained ECC error",
	119: "GSP RPC timeout",
	120: "GSP error",
}

// GPUProblems compares the GPUs now with the baseline the agent found at
// start. err is the error of reading the inventory now.
func GPUProblems(baseline, now gpu.Inventory, err error) []Problem {
	var out []Problem
	gpuIdx := -1
	add := func(format string, args ...any) {
		out = append(out, Problem{Check: "gpu", Message: fmt.Sprintf(format, args...), GPU: gpuIdx})
	}
	if err != nil {
		add("NVML: %v", err)
		return out
	}
	byUUID := map[string]gpu.Device{}
	for _, d := range now.Devices {
		byUUID[d.UUID] = d
	}
	var missing []string
	var missingIdx []int
	for _, b := range baseline.Devices {
		if _, ok := byUUID[b.UUID]; !ok {
			missing = append(missing, fmt.Sprintf("GPU %d (%s)", b.Index, b.UUID))
			missingIdx = append(missingIdx, b.Index)
		}
	}
	if len(missing) > 0 {
		add("%d of %d GPUs missing: %s", len(missing), len(baseline.Devices), strings.Join(missing, ", "))
		// One problem, every missing GPU unhealthy.
		out[len(out)-1].GPU = missingIdx[0]
		for _, i := range missingIdx[1:] {
			out = append(out, Problem{Check: "gpu", Message: out[len(out)-1].Message, GPU: i})
		}
	}
	base := map[string]gpu.Device{}
	for _, b := range baseline.Devices {
		base[b.UUID] = b
	}
	for _, d := range now.Devices {
		gpuIdx = d.Index
		name := fmt.Sprintf("GPU %d (%s)", d.Index, d.UUID)
		for _, e := range d.Errors {
			add("%s: NVML %s", name, e)
		}
		if d.ECCUncorrected > 0 {
			add("%s: %d uncorrectable ECC errors", name, d.ECCUncorrected)
		}
		if d.RemapFailed {
			add("%s: row remapping failed (replace the GPU)", name)
		} else if d.RemapPending {
			add("%s: row remapping pending (reset the GPU)", name)
		}
		for _, x := range d.XIDs {
			if ignoredXIDs[x.Code] {
				continue
			}
			if m, ok := xidMeaning[x.Code]; ok {
				add("%s: Xid %d (%s)", name, x.Code, m)
			} else {
				add("%s: Xid %d", name, x.Code)
			}
		}
		if b, ok := base[d.UUID]; ok && d.NVLinks < b.NVLinks {
			add("%s: %d of %d NVLinks down", name, b.NVLinks-d.NVLinks, b.NVLinks)
		}
	}
	return out
}

// IBProblems reports the HCA ports that were active at start and are not
// now, and HCAs that vanished.
func IBProblems(baseline, now []ib.HCA) []Problem {
	var out []Problem
	cur := map[string]ib.HCA{}
	for _, h := range now {
		cur[h.Name] = h
	}
	for _, b := range baseline {
		h, ok := cur[b.Name]
		if !ok {
			out = append(out, Problem{Check: "infiniband", Message: b.Name + " missing", GPU: -1})
			continue
		}
		for _, bp := range b.Ports {
			if !bp.Active() {
				continue
			}
			i := slices.IndexFunc(h.Ports, func(p ib.Port) bool { return p.Num == bp.Num })
			if i < 0 {
				out = append(out, Problem{Check: "infiniband", Message: fmt.Sprintf("%s port %d missing", b.Name, bp.Num), GPU: -1})
			} else if p := h.Ports[i]; !p.Active() {
				out = append(out, Problem{Check: "infiniband", Message: fmt.Sprintf("%s port %d %s (%s)", b.Name, bp.Num, p.State, p.PhysState), GPU: -1})
			}
		}
	}
	return out
}
