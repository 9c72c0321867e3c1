package health

import (
	"context"

	"gpucloud/internal/agent/gpu"
	"gpucloud/internal/agent/ib"
)

// Checker runs every check against the baseline taken by NewChecker.
type Checker struct {
	gpus   gpu.Source
	ibRoot string
	script *Script

	gpuBase gpu.Inventory
	ibBase  []ib.HCA
}

// NewChecker records the baseline: the GPUs and HCA ports present now are
// the ones the node must keep. script may be nil.
func NewChecker(gpus gpu.Source, ibRoot string, script *Script) (*Checker, error) {
	c := &Checker{gpus: gpus, ibRoot: ibRoot, script: script}
	var err error
	if c.gpuBase, err = gpus.Inventory(); err != nil {
		return nil, err
	}
	if c.ibBase, err = ib.Discover(ibRoot); err != nil {
		return nil, err
	}
	return c, nil
}

// Baseline returns what the node was found with.
func (c *Checker) Baseline() (gpu.Inventory, []ib.HCA) { return c.gpuBase, c.ibBase }

// Check runs the GPU, InfiniBand and script checks once.
func (c *Checker) Check(ctx context.Context) Report {
	var r Report
	inv, err := c.gpus.Inventory()
	r.Problems = append(r.Problems, GPUProblems(c.gpuBase, inv, err)...)
	hcas, err := ib.Discover(c.ibRoot)
	if err != nil {
		r.Problems = append(r.Problems, Problem{Check: "infiniband", Message: err.Error(), GPU: -1})
	} else {
		r.Problems = append(r.Problems, IBProblems(c.ibBase, hcas)...)
	}
	if c.script != nil {
		if p := c.script.Run(ctx); p != nil {
			r.Problems = append(r.Problems, *p)
		}
	}
	return r
}
