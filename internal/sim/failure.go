package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"gpucloud/internal/topology"
)

// Llama 3's pre-training run (Meta, "The Llama 3 Herd of Models", 2024,
// section 3.3.4): 419 unexpected interruptions in a 54-day snapshot on
// 16,384 H100 GPUs (2,048 nodes of 8), about 58.7% of them attributed to
// GPU issues (GPU, HBM3, NVLink, SRAM, ...), the rest to the host, network,
// software and the like.
const (
	llama3Interruptions = 419
	llama3Days          = 54
	llama3GPUs          = 16384
	llama3GPUsPerNode   = 8
	llama3GPUShare      = 0.587
)

// FailureModel says how often nodes fail and how long they are away.
//
// Each node fails as a Poisson process of rate NodeRate + GPUs*GPURate per
// hour: a failed GPU takes its node out of service like any other fault,
// because its gangs die with it and the node must be drained to be
// repaired.
type FailureModel struct {
	Enabled bool
	// GPURate is the rate of GPU-caused interruptions per GPU-hour.
	GPURate float64
	// NodeRate is the rate of other interruptions per node-hour.
	NodeRate float64
	// Repair is how long a failed node stays out of service.
	Repair time.Duration
}

// DefaultRepair is the default time a failed node is out of service. Meta
// does not publish one; a few hours covers a reboot, diagnostics and a
// swap from a spare pool, and shows the cost clearly.
const DefaultRepair = 4 * time.Hour

// Llama3Failures is the failure model calibrated on Llama 3 pre-training:
// about 1.16e-5 GPU interruptions per GPU-hour (one per 86,000 GPU-hours)
// and 6.5e-5 other interruptions per node-hour (one per 15,300 node-hours),
// so a 16,384-GPU fleet sees 419 in 54 days.
func Llama3Failures() FailureModel {
	hours := float64(llama3Days * 24)
	return FailureModel{
		Enabled:  true,
		GPURate:  llama3Interruptions * llama3GPUShare / (llama3GPUs * hours),
		NodeRate: llama3Interruptions * (1 - llama3GPUShare) / (llama3GPUs / llama3GPUsPerNode * hours),
		Repair:   DefaultRepair,
	}
}

// Validate checks the model.
func (m FailureModel) Validate() error {
	if !m.Enabled {
		return nil
	}
	if m.GPURate < 0 || m.NodeRate < 0 || m.GPURate != m.GPURate || m.NodeRate != m.NodeRate {
		return fmt.Errorf("failure rates must be zero or positive, got %g per GPU-hour and %g per node-hour", m.GPURate, m.NodeRate)
	}
	if m.Repair <= 0 {
		return fmt.Errorf("repair time must be positive, got %v", m.Repair)
	}
	return nil
}

// failureCause is what broke.
type failureCause uint8

const (
	causeGPU failureCause = iota
	causeNode
)

// failureProcess draws the failures of a whole fleet as one Poisson process
// (the sum of the nodes' processes) and picks the node in proportion to its
// rate. A draw that lands on a node already in repair is dropped, which
// leaves each node's process while it is up exactly as modelled. The draws
// do not depend on what the scheduler does, so every policy compared on one
// seed meets the same failures at the same instants.
type failureProcess struct {
	r     *rand.Rand
	cum   []float64 // cumulative rate per node, per hour
	gpuRt []float64 // GPU part of each node's rate
	total float64
	next  time.Duration
}

func newFailureProcess(m FailureModel, f *topology.Fabric, seed uint64) *failureProcess {
	if !m.Enabled || (m.GPURate == 0 && m.NodeRate == 0) {
		return nil
	}
	p := &failureProcess{
		r:     rand.New(rand.NewPCG(seed, 0xfa11_0f_11a3a3)),
		cum:   make([]float64, len(f.Nodes)),
		gpuRt: make([]float64, len(f.Nodes)),
	}
	for i := range f.Nodes {
		g := m.GPURate * float64(f.NodeGPUs(topology.NodeID(i)))
		p.gpuRt[i] = g
		p.total += g + m.NodeRate
		p.cum[i] = p.total
	}
	return p
}

// draw advances to the next failure of the fleet and returns its time, the
// node and the cause.
func (p *failureProcess) draw() (time.Duration, topology.NodeID, failureCause) {
	hours := p.r.ExpFloat64() / p.total
	p.next += time.Duration(hours * float64(time.Hour))
	x := p.r.Float64() * p.total
	n, _ := slices.BinarySearch(p.cum, x)
	if n >= len(p.cum) {
		n = len(p.cum) - 1
	}
	lo := 0.0
	if n > 0 {
		lo = p.cum[n-1]
	}
	cause := causeNode
	if x-lo < p.gpuRt[n] {
		cause = causeGPU
	}
	return p.next, topology.NodeID(n), cause
}
