package plan

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Run is one published training measurement: a model, the layout and batch
// it ran with, and its measured hardware TFLOP/s per GPU.
type Run struct {
	Model       string
	Layers      int
	Hidden      int
	Heads       int
	Seq         int
	Vocab       int
	GlobalBatch int
	GPU         string
	GPUs        int
	TP, PP, DP  int
	Measured    float64 // hardware TFLOP/s per GPU (recomputation counted)
}

// ReadRuns parses the published-measurements CSV (the columns of
// Narayanan et al., SC'21, Table 1: model, params_b, layers, hidden, heads,
// seq_len, vocab, global_batch, gpu, num_gpus, tp, pp, dp,
// measured_tflops_per_gpu). Errors name the line and column.
func ReadRuns(r io.Reader, name string) ([]Run, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("%s: reading header: %w", name, err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.TrimSpace(h)] = i
	}
	need := []string{"model", "layers", "hidden", "heads", "seq_len", "vocab", "global_batch", "gpu", "num_gpus", "tp", "pp", "dp", "measured_tflops_per_gpu"}
	for _, n := range need {
		if _, ok := col[n]; !ok {
			return nil, fmt.Errorf("%s: header has no column %q", name, n)
		}
	}
	var runs []Run
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		line, _ := cr.FieldPos(0)
		ints := map[string]int{}
		for _, n := range []string{"layers", "hidden", "heads", "seq_len", "vocab", "global_batch", "num_gpus", "tp", "pp", "dp"} {
			v, err := strconv.Atoi(strings.TrimSpace(rec[col[n]]))
			if err != nil || v <= 0 {
				return nil, fmt.Errorf("%s:%d: column %s: want a positive integer, got %q", name, line, n, rec[col[n]])
			}
			ints[n] = v
		}
		meas, err := strconv.ParseFloat(strings.TrimSpace(rec[col["measured_tflops_per_gpu"]]), 64)
		if err != nil || !(meas > 0) || math.IsInf(meas, 0) {
			return nil, fmt.Errorf("%s:%d: column measured_tflops_per_gpu: want a positive number, got %q", name, line, rec[col["measured_tflops_per_gpu"]])
		}
		runs = append(runs, Run{Model: rec[col["model"]], Layers: ints["layers"], Hidden: ints["hidden"], Heads: ints["heads"],
			Seq: ints["seq_len"], Vocab: ints["vocab"], GlobalBatch: ints["global_batch"], GPU: rec[col["gpu"]],
			GPUs: ints["num_gpus"], TP: ints["tp"], PP: ints["pp"], DP: ints["dp"], Measured: meas})
	}
	return runs, nil
}

// Validation is the prediction for one published run.
type Validation struct {
	Run       Run
	Predicted Result // best microbatch and virtual stages under the published layout
	Error     float64
}

// Validate predicts a published run the same way for every row: the
// published model, GPU count, batch and tp/pp/dp are fixed, the stack is
// Megatron-LM of SC'21 with full recomputation (as the paper ran), and the
// microbatch size and the number of interleaved virtual stages are the ones
// the model predicts fastest under that layout (neither is in the table).
func Validate(run Run) (Validation, error) {
	cl, err := ClusterFromPreset("ndv4", run.GPU)
	if err != nil {
		return Validation{}, err
	}
	c := Config{Model: GPTModel(run.Layers, run.Hidden, run.Heads, run.Seq, run.Vocab), Cluster: cl,
		Stack: Stacks["megatron-sc21"], GPUs: run.GPUs, GlobalBatch: run.GlobalBatch}
	c.Model.Name = run.Model
	fix := Fixed{TP: run.TP, PP: run.PP, DP: run.DP, Recompute: RecomputeFull, ZeRO: 0, SeqParallel: -1}
	res, err := Search(c, fix, 1)
	if err != nil {
		return Validation{}, fmt.Errorf("%s: %w", run.Model, err)
	}
	p := res[0]
	return Validation{Run: run, Predicted: p, Error: (p.HWTFLOPS - run.Measured) / run.Measured}, nil
}
