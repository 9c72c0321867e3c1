package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"gpucloud/internal/plan"
	"gpucloud/internal/topology"
)

func init() { extraCommands = append(extraCommands, newPlanCmd) }

type planFlags struct {
	model                               string
	layers, hidden, heads, kvHeads, ffn int
	seq, vocab                          int
	gated                               bool
	gpu, fabric, stack                  string
	gpus, batch                         int
	tp, pp, dp, vp, microbatch, zero    int
	recompute                           string
	sp                                  bool
	tokens                              string
	top                                 int
	asJSON, gemms                       bool
}

func newPlanCmd() *cobra.Command {
	var f planFlags
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Predict and choose the parallel layout of large-model training",
		Long: `plan predicts the iteration time, TFLOP/s per GPU and memory per GPU of
training a transformer with tensor (tp), pipeline (pp, with interleaved
virtual stages vp) and data (dp) parallelism, microbatching, activation
recomputation, sequence parallelism and ZeRO, and searches for the fastest
layout that fits. With --tp, --pp and --dp it evaluates that layout (still
choosing any of --vp --microbatch --recompute --zero --sp not given) and says
why when it cannot run.

TFLOP/s are reported both ways: model FLOPs (MFU: forward and backward only)
and hardware FLOPs (recomputation included). Memory is in GB of 2^30 bytes,
as the "80GB" of a GPU. See docs/planner.md for the model and its validation.`,
		Example: `  gpucloud plan --model gpt3-175b --gpu a100-80gb --gpus 1024 --global-batch 1536
  gpucloud plan --model mt-nlg-530b --gpu a100-80gb --gpus 2240 --global-batch 1920 --tp 8 --pp 35 --dp 8 --json
  gpucloud plan --model llama3-405b --gpu h100 --gpus 16384 --global-batch 2048 --top 5
  gpucloud plan --layers 48 --hidden 8192 --heads 64 --seq 2048 --vocab 51200 --gpu h200 --gpus 512 --global-batch 1536`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runPlan(cmd, &f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.model, "model", "", "model preset: "+strings.Join(plan.ModelNames(), "|"))
	fl.IntVar(&f.layers, "layers", 0, "transformer layers (explicit model, or override the preset)")
	fl.IntVar(&f.hidden, "hidden", 0, "hidden size")
	fl.IntVar(&f.heads, "heads", 0, "attention heads")
	fl.IntVar(&f.kvHeads, "kv-heads", 0, "key/value heads for grouped-query attention (default: --heads)")
	fl.IntVar(&f.ffn, "ffn", 0, "MLP inner size (default: 4 x --hidden)")
	fl.IntVar(&f.seq, "seq", 0, "sequence length")
	fl.IntVar(&f.vocab, "vocab", 0, "vocabulary size")
	fl.BoolVar(&f.gated, "gated", false, "SwiGLU MLP with untied output layer and no position table (Llama-style)")
	fl.StringVar(&f.gpu, "gpu", "", "GPU: "+strings.Join(plan.GPUNames(), "|")+" (default: the --fabric's)")
	fl.StringVar(&f.fabric, "fabric", "", "nodes and network: a topology preset ("+strings.Join(topology.PresetNames(), "|")+") or a fabric file (default: the GPU's usual HGX node)")
	fl.StringVar(&f.stack, "stack", "megatron-core", "training software: "+strings.Join(plan.StackNames(), "|"))
	fl.IntVar(&f.gpus, "gpus", 0, "GPUs for the job (all are used: tp*pp*dp = gpus)")
	fl.IntVar(&f.batch, "global-batch", 0, "global batch in sequences per iteration")
	fl.IntVar(&f.tp, "tp", 0, "tensor-parallel degree (default: search)")
	fl.IntVar(&f.pp, "pp", 0, "pipeline stages (default: search)")
	fl.IntVar(&f.dp, "dp", 0, "data-parallel replicas (default: search)")
	fl.IntVar(&f.vp, "vp", 0, "virtual stages per pipeline rank, interleaved schedule (default: search)")
	fl.IntVar(&f.microbatch, "microbatch", 0, "microbatch size in sequences (default: search)")
	fl.StringVar(&f.recompute, "recompute", "", "activation recomputation: none|selective|full (default: search)")
	fl.IntVar(&f.zero, "zero", 0, "ZeRO stage 0..3; 1 is Megatron's distributed optimizer (default: search)")
	fl.BoolVar(&f.sp, "sp", false, "sequence parallelism (default: search)")
	fl.StringVar(&f.tokens, "tokens", "", "tokens to train on, e.g. 300e9 or 15T (default: the preset's published budget)")
	fl.IntVar(&f.top, "top", 1, "show the K fastest layouts")
	fl.BoolVar(&f.asJSON, "json", false, "print JSON: one object, or a list with --top")
	fl.BoolVar(&f.gemms, "gemms", false, "print the GEMM shapes of the best layout with their predicted TFLOP/s as JSON (input of scripts/gemm_bench.py)")
	return cmd
}

func runPlan(cmd *cobra.Command, f *planFlags) error {
	fl := cmd.Flags()
	c, err := planConfig(cmd, f)
	if err != nil {
		return err
	}
	fix := plan.AnyLayout()
	fix.TP, fix.PP, fix.DP, fix.VP, fix.Microbatch = f.tp, f.pp, f.dp, f.vp, f.microbatch
	for _, p := range []struct {
		name string
		v    int
	}{{"--tp", f.tp}, {"--pp", f.pp}, {"--dp", f.dp}, {"--vp", f.vp}, {"--microbatch", f.microbatch}} {
		if fl.Changed(strings.TrimPrefix(p.name, "--")) && p.v < 1 {
			return fmt.Errorf("%s must be at least 1, got %d", p.name, p.v)
		}
	}
	if fl.Changed("recompute") {
		if fix.Recompute, err = plan.ParseRecompute(f.recompute); err != nil {
			return err
		}
	}
	if fl.Changed("zero") {
		if f.zero < 0 || f.zero > 3 {
			return fmt.Errorf("--zero %d: want 0, 1, 2 or 3", f.zero)
		}
		fix.ZeRO = f.zero
	}
	if fl.Changed("sp") {
		fix.SeqParallel = -1
		if f.sp {
			fix.SeqParallel = 1
		}
	}
	if f.top < 1 {
		return fmt.Errorf("--top must be at least 1, got %d", f.top)
	}
	if f.tp > 0 && f.pp > 0 && f.dp > 0 && f.tp*f.pp*f.dp != f.gpus {
		return fmt.Errorf("--tp %d x --pp %d x --dp %d = %d, but --gpus is %d", f.tp, f.pp, f.dp, f.tp*f.pp*f.dp, f.gpus)
	}
	results, err := plan.Search(c, fix, f.top)
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if f.gemms {
		return writeJSON(w, struct {
			GPU        string           `json:"gpu"`
			PeakTFLOPS float64          `json:"peak_bf16_tflops"`
			MatmulEff  float64          `json:"matmul_eff"`
			Layout     plan.Layout      `json:"layout"`
			GEMMs      []plan.GEMMShape `json:"gemms"`
		}{c.Cluster.GPU.Name, c.Cluster.GPU.BF16TFLOPS, c.Cluster.GPU.MatmulEff, results[0].Layout, plan.GEMMs(c, results[0].Layout)})
	}
	if f.asJSON {
		if fl.Changed("top") {
			return writeJSON(w, results)
		}
		return writeJSON(w, results[0])
	}
	printPlan(w, c, results)
	return nil
}

// planConfig builds the job from the flags; errors name the flag.
func planConfig(cmd *cobra.Command, f *planFlags) (plan.Config, error) {
	fl := cmd.Flags()
	var m plan.Model
	if f.model != "" {
		var err error
		if m, err = plan.LookupModel(f.model); err != nil {
			return plan.Config{}, fmt.Errorf("--model: %w", err)
		}
	} else {
		var missing []string
		for _, n := range []string{"layers", "hidden", "heads", "seq", "vocab"} {
			if !fl.Changed(n) {
				missing = append(missing, "--"+n)
			}
		}
		if len(missing) > 0 {
			return plan.Config{}, fmt.Errorf("give --model NAME or an explicit shape; missing %s", strings.Join(missing, " "))
		}
		m = plan.GPTModel(f.layers, f.hidden, f.heads, f.seq, f.vocab)
		m.Name = "custom"
	}
	override := []struct {
		name string
		dst  *int
		v    int
	}{{"layers", &m.Layers, f.layers}, {"hidden", &m.Hidden, f.hidden}, {"heads", &m.Heads, f.heads},
		{"kv-heads", &m.KVHeads, f.kvHeads}, {"ffn", &m.FFN, f.ffn}, {"seq", &m.Seq, f.seq}, {"vocab", &m.Vocab, f.vocab}}
	for _, o := range override {
		if fl.Changed(o.name) {
			*o.dst = o.v
		}
	}
	if fl.Changed("hidden") && !fl.Changed("ffn") && !m.Gated {
		m.FFN = 4 * m.Hidden
	}
	if fl.Changed("heads") && !fl.Changed("kv-heads") && f.model == "" {
		m.KVHeads = m.Heads
	}
	if f.gated {
		m.Gated, m.Untied, m.LearnedPositions = true, true, false
	}
	if !fl.Changed("gpus") {
		return plan.Config{}, errors.New("--gpus is required")
	}
	if !fl.Changed("global-batch") {
		return plan.Config{}, errors.New("--global-batch is required")
	}
	cl, err := planCluster(f)
	if err != nil {
		return plan.Config{}, err
	}
	st, err := plan.LookupStack(f.stack)
	if err != nil {
		return plan.Config{}, err
	}
	c := plan.Config{Model: m, Cluster: cl, Stack: st, GPUs: f.gpus, GlobalBatch: f.batch}
	if f.tokens != "" {
		if c.Tokens, err = parseCount(f.tokens); err != nil {
			return plan.Config{}, fmt.Errorf("--tokens: %w", err)
		}
	}
	return c, c.Validate()
}

func planCluster(f *planFlags) (plan.Cluster, error) {
	switch {
	case f.fabric == "" && f.gpu == "":
		return plan.Cluster{}, fmt.Errorf("--gpu is required (one of %s), or --fabric", strings.Join(plan.GPUNames(), ", "))
	case f.fabric == "":
		cl, err := plan.DefaultCluster(f.gpu)
		if err != nil {
			return cl, fmt.Errorf("--gpu: %w", err)
		}
		return cl, nil
	}
	if _, ok := topology.Presets[f.fabric]; ok {
		cl, err := plan.ClusterFromPreset(f.fabric, f.gpu)
		if err != nil {
			return cl, fmt.Errorf("--fabric: %w", err)
		}
		return cl, nil
	}
	if _, err := os.Stat(f.fabric); err != nil {
		return plan.Cluster{}, fmt.Errorf("--fabric %q is neither a preset (%s) nor a readable file: %w",
			f.fabric, strings.Join(topology.PresetNames(), ", "), err)
	}
	fab, _, err := topology.LoadFile(f.fabric, "")
	if err != nil {
		return plan.Cluster{}, fmt.Errorf("--fabric: %w", err)
	}
	cl, err := plan.ClusterFromFabric(fab, f.gpu)
	if err != nil {
		return cl, fmt.Errorf("--fabric %s: %w", f.fabric, err)
	}
	return cl, nil
}

// parseCount reads 300e9, 1.5e12, 300B, 15T, 500M.
func parseCount(s string) (float64, error) {
	mult := 1.0
	t := strings.TrimSpace(s)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k', 'K':
			mult, t = 1e3, t[:n-1]
		case 'm', 'M':
			mult, t = 1e6, t[:n-1]
		case 'b', 'B', 'g', 'G':
			mult, t = 1e9, t[:n-1]
		case 't', 'T':
			mult, t = 1e12, t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("want a count such as 300e9 or 15T, got %q", s)
	}
	return v * mult, nil
}

func printPlan(w io.Writer, c plan.Config, rs []plan.Result) {
	m, cl := c.Model, c.Cluster
	fmt.Fprintf(w, "%s (%.1fB parameters) on %d x %s, %s: %d GPUs per node, NVLink domain %d, %.0f GB/s InfiniBand per GPU\n",
		m.Name, m.Params()/1e9, c.GPUs, cl.GPU.Name, cl.Source, cl.GPUsPerNode, cl.NVLinkGPUs, cl.NICGBps)
	fmt.Fprintf(w, "stack %s, global batch %d x %d tokens\n\n", c.Stack.Name, c.GlobalBatch, m.Seq)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "#\ttp\tpp\tdp\tvp\tmb\trecompute\tsp\tzero\titer s\tmodel TFLOP/s\tMFU\thw TFLOP/s\tmemory GB\t")
	for i, r := range rs {
		sp := "-"
		if r.SeqParallel {
			sp = "on"
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%d\t%.2f\t%.1f\t%.1f%%\t%.1f\t%.1f\t\n",
			i+1, r.TP, r.PP, r.DP, r.VP, r.Microbatch, r.RecomputeName, sp, r.ZeRO, r.IterSec, r.ModelTFLOPS, 100*r.MFU, r.HWTFLOPS, r.MemoryGB)
	}
	tw.Flush()
	b := rs[0]
	t := b.Time
	pct := func(x float64) string { return fmt.Sprintf("%.2f s (%.0f%%)", x, 100*x/b.IterSec) }
	fmt.Fprintf(w, "\nBest: %s, %d microbatches per replica\n", b.Layout, b.Microbatches)
	fmt.Fprintf(w, "  iteration %.2f s: GEMM %s, attention %s, memory-bound %s, TP comm %s, PP comm %s, bubble %s, DP comm %s, optimizer %s\n",
		b.IterSec, pct(t.GEMM), pct(t.Attention), pct(t.Memory), pct(t.TPComm), pct(t.PPComm), pct(t.Bubble), pct(t.DPComm), pct(t.Optimizer))
	fmt.Fprintf(w, "  per GPU: %.1f TFLOP/s model FLOPs (MFU %.1f%%), %.1f TFLOP/s hardware FLOPs with recomputation (HFU %.1f%%) of %.0f dense BF16\n",
		b.ModelTFLOPS, 100*b.MFU, b.HWTFLOPS, 100*b.HFU, cl.GPU.BF16TFLOPS)
	mm := b.Mem
	fmt.Fprintf(w, "  memory per GPU: %.1f of %.4g GB: weights %.1f, gradients %.1f, optimizer %.1f, activations %.1f, buffers %.1f\n",
		mm.Total, cl.GPU.MemoryGiB, mm.Weights, mm.Gradients, mm.Optimizer, mm.Activations, mm.Buffers)
	if b.Tokens > 0 {
		fmt.Fprintf(w, "  %.3g tokens at %.3g tokens/s: %.1f days, %.3g GPU-hours\n", b.Tokens, b.TokensPerSec, b.TrainDays, b.GPUHours)
	} else {
		fmt.Fprintf(w, "  %.3g tokens/s (give --tokens for the training time)\n", b.TokensPerSec)
	}
}
