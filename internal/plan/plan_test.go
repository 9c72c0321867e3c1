package plan

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"gpucloud/internal/topology"
)

// job is a test builder for configs.
type job struct{ Config }

func newJob(model, gpu string, gpus, batch int) *job {
	m, err := LookupModel(model)
	if err != nil {
		panic(err)
	}
	cl, err := DefaultCluster(gpu)
	if err != nil {
		panic(err)
	}
	return &job{Config{Model: m, Cluster: cl, Stack: Stacks["megatron-core"], GPUs: gpus, GlobalBatch: batch}}
}

func (j *job) stack(name string) *job { j.Stack = Stacks[name]; return j }

func TestPresetParameterCounts(t *testing.T) {
	// Published sizes: GPT-3 175B, MT-NLG 530B, Llama 3 70B and 405B, the
	// SC'21 1T (1008.0B in its Table 1).
	want := map[string]float64{"gpt3-175b": 175, "mt-nlg-530b": 530, "llama3-70b": 70.6, "llama3-405b": 405, "gpt-1t": 1008}
	for name, b := range want {
		m, err := LookupModel(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Params() / 1e9; math.Abs(got-b)/b > 0.01 {
			t.Errorf("%s: %.1fB parameters, want %.1fB within 1%%", name, got, b)
		}
	}
}

func TestMemoryBreakdownScalesWithZeROAndRecomputation(t *testing.T) {
	c := newJob("gpt3-175b", "a100-80gb", 512, 512).Config
	base := Layout{TP: 8, PP: 1, DP: 64, VP: 1, Microbatch: 1, Recompute: RecomputeFull}
	mem := func(mod func(*Layout)) Memory {
		l := base
		mod(&l)
		r, err := Estimate(c, l)
		var inf *InfeasibleError
		if err != nil && !errors.As(err, &inf) {
			t.Fatal(err)
		}
		return r.Mem
	}
	z0 := mem(func(*Layout) {})
	type ratios struct{ Weights, Gradients, Optimizer, Activations float64 }
	ratio := func(m Memory) ratios {
		return ratios{m.Weights / z0.Weights, m.Gradients / z0.Gradients, m.Optimizer / z0.Optimizer, m.Activations / z0.Activations}
	}
	tests := []struct {
		name string
		mod  func(*Layout)
		want ratios
	}{
		{"zero-1 shards the optimizer states", func(l *Layout) { l.ZeRO = 1 }, ratios{1, 1, 1.0 / 64, 1}},
		{"zero-2 also the gradients", func(l *Layout) { l.ZeRO = 2 }, ratios{1, 1.0 / 64, 1.0 / 64, 1}},
		{"zero-3 also the weights", func(l *Layout) { l.ZeRO = 3 }, ratios{1.0 / 64, 1.0 / 64, 1.0 / 64, 1}},
		{"microbatch 2 doubles activations", func(l *Layout) { l.Microbatch = 2 }, ratios{1, 1, 1, 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, ratio(mem(tc.mod)), cmpopts.EquateApprox(1e-9, 0)); d != "" {
				t.Errorf("memory ratios to zero-0 (-want +got):\n%s", d)
			}
		})
	}
	// Weights are 2 bytes, gradients 4 (fp32 main grads), Adam 12, per
	// parameter on the GPU.
	params := c.Model.Params() / 8 / gib
	if d := cmp.Diff([3]float64{2 * params, 4 * params, 12 * params}, [3]float64{z0.Weights, z0.Gradients, z0.Optimizer},
		cmpopts.EquateApprox(0.002, 0)); d != "" { // the embedding is not in Params()/8 exactly
		t.Errorf("bytes per parameter (-want +got):\n%s", d)
	}
	none := mem(func(l *Layout) { l.Recompute = RecomputeNone })
	sp := mem(func(l *Layout) { l.Recompute = RecomputeNone; l.SeqParallel = true })
	if !(z0.Activations < sp.Activations && sp.Activations < none.Activations) {
		t.Errorf("activations: full recompute %.1f GB, sequence parallel %.1f, none %.1f: want increasing",
			z0.Activations, sp.Activations, none.Activations)
	}
	if sum := z0.Weights + z0.Gradients + z0.Optimizer + z0.Activations + z0.Buffers; math.Abs(sum-z0.Total) > 1e-9 {
		t.Errorf("breakdown sums to %.3f, total says %.3f", sum, z0.Total)
	}
}

func TestSelectiveRecomputationDropsOnlyTheScores(t *testing.T) {
	c := newJob("gpt3-175b", "a100-80gb", 1024, 1536).stack("megatron-sc21").Config
	l := Layout{TP: 8, PP: 8, DP: 16, VP: 1, Microbatch: 1}
	get := func(rc Recompute) Result {
		l.Recompute = rc
		r, _ := Estimate(c, l)
		return r
	}
	none, sel, full := get(RecomputeNone), get(RecomputeSelective), get(RecomputeFull)
	if !(full.Mem.Activations < sel.Mem.Activations && sel.Mem.Activations < none.Mem.Activations) {
		t.Errorf("activations full %.1f, selective %.1f, none %.1f GB: want increasing", full.Mem.Activations, sel.Mem.Activations, none.Mem.Activations)
	}
	if !(none.IterSec < sel.IterSec && sel.IterSec < full.IterSec) {
		t.Errorf("iteration none %.2f, selective %.2f, full %.2f s: want increasing", none.IterSec, sel.IterSec, full.IterSec)
	}
	// Hardware FLOPs/s exceed model FLOPs/s by exactly the recomputed work.
	m := c.Model
	for _, r := range []Result{none, sel, full} {
		want := m.HardwareFLOPsPerToken(r.Recompute) / m.ModelFLOPsPerToken()
		if got := r.HWTFLOPS / r.ModelTFLOPS; math.Abs(got-want) > 1e-9 {
			t.Errorf("%s: hardware/model TFLOP/s %.4f, want %.4f", r.Recompute, got, want)
		}
	}
}

func TestIterationBreakdownAddsUp(t *testing.T) {
	c := newJob("mt-nlg-530b", "a100-80gb", 2520, 2520).stack("megatron-sc21").Config
	r, err := Estimate(c, Layout{TP: 8, PP: 35, DP: 9, VP: 3, Microbatch: 1, Recompute: RecomputeFull})
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(r.Time.Sum()-r.IterSec) > 1e-9 {
		t.Errorf("breakdown sums to %.4f s, iteration is %.4f s", r.Time.Sum(), r.IterSec)
	}
	for name, v := range map[string]float64{"gemm": r.Time.GEMM, "tp": r.Time.TPComm, "pp": r.Time.PPComm,
		"bubble": r.Time.Bubble, "dp": r.Time.DPComm, "memory-bound": r.Time.Memory} {
		if !(v > 0) {
			t.Errorf("%s time is %g; a 35-stage tp=8 layout has some of each", name, v)
		}
	}
	// Interleaving divides the bubble by the virtual stages.
	r1, _ := Estimate(c, Layout{TP: 8, PP: 35, DP: 9, VP: 1, Microbatch: 1, Recompute: RecomputeFull})
	if got := r1.Time.Bubble / r.Time.Bubble; math.Abs(got-3) > 0.3 {
		t.Errorf("bubble with vp=1 is %.2fx the bubble with vp=3, want about 3x", got)
	}
	days := r.Tokens / r.TokensPerSec / 86400
	if r.Tokens != 270e9 || math.Abs(r.TrainDays-days) > 1e-9 || math.Abs(r.GPUHours-days*24*2520) > 1e-3 {
		t.Errorf("training time for %.3g tokens: %.2f days, %.4g GPU-hours", r.Tokens, r.TrainDays, r.GPUHours)
	}
}

func TestInfeasibleLayoutsSayWhy(t *testing.T) {
	a100 := newJob("gpt3-175b", "a100-80gb", 1024, 1536).Config
	sc21 := newJob("gpt3-175b", "a100-80gb", 1024, 1536).stack("megatron-sc21").Config
	tests := []struct {
		name string
		c    Config
		fix  Fixed
		want string
	}{
		{"tp beyond NVLink", a100, Fixed{TP: 16, PP: 8, DP: 8, ZeRO: ZeROAny, Recompute: RecomputeAny}, "tp=16 exceeds the NVLink domain of 8 GPUs"},
		{"does not fit", a100, Fixed{TP: 2, PP: 1, DP: 512, ZeRO: 0, Recompute: RecomputeAny, SeqParallel: -1},
			"GB per GPU, the A100-80GB has 80"},
		{"uneven stages on 2021 Megatron", sc21, Fixed{TP: 8, PP: 128, DP: 1, ZeRO: ZeROAny, Recompute: RecomputeAny},
			"pp=128 exceeds the 96 layers"},
		{"pp not dividing layers", sc21, Fixed{TP: 8, PP: 64, DP: 2, ZeRO: ZeROAny, Recompute: RecomputeAny},
			"pp=64 does not divide the 96 layers"},
		{"zero-3 with pipelining", a100, Fixed{TP: 8, PP: 8, DP: 16, ZeRO: 3, Recompute: RecomputeAny}, "does not combine with pipeline parallelism"},
		{"heads", a100, Fixed{TP: 8, PP: 1, DP: 128, Microbatch: 5, ZeRO: ZeROAny, Recompute: RecomputeAny},
			"global batch 1536 is not a multiple of dp*microbatch = 128*5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Search(tc.c, tc.fix, 1)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
	// Estimate of a fixed layout says the same.
	_, err := Estimate(a100, Layout{TP: 16, PP: 8, DP: 8, VP: 1, Microbatch: 1})
	var inf *InfeasibleError
	if !errors.As(err, &inf) || !strings.Contains(err.Error(), "exceeds the NVLink domain") {
		t.Errorf("Estimate: %v, want an InfeasibleError about NVLink", err)
	}
}

func TestSearchRanksFastestFirstAndHonoursPins(t *testing.T) {
	c := newJob("gpt3-175b", "h100", 1024, 1536).Config
	rs, err := Search(c, AnyLayout(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 10 {
		t.Fatalf("%d results, want 10", len(rs))
	}
	for i, r := range rs {
		if !r.Fits || r.MemoryGB > c.Cluster.GPU.MemoryGiB {
			t.Errorf("#%d %s does not fit: %.1f GB", i+1, r.Layout, r.MemoryGB)
		}
		if r.TP*r.PP*r.DP != 1024 {
			t.Errorf("#%d %s does not use 1024 GPUs", i+1, r.Layout)
		}
		if i > 0 && r.IterSec < rs[i-1].IterSec {
			t.Errorf("#%d (%.3f s) is faster than #%d (%.3f s)", i+1, r.IterSec, i, rs[i-1].IterSec)
		}
	}
	again, _ := Search(c, AnyLayout(), 10)
	if d := cmp.Diff(rs, again); d != "" {
		t.Errorf("search is not deterministic:\n%s", d)
	}
	pinned, err := Search(c, Fixed{TP: 4, PP: 8, DP: 32, Recompute: RecomputeFull, ZeRO: 1}, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range pinned {
		if r.TP != 4 || r.PP != 8 || r.DP != 32 || r.Recompute != RecomputeFull || r.ZeRO != 1 {
			t.Errorf("pinned search returned %s", r.Layout)
		}
		if r.IterSec < rs[0].IterSec {
			t.Errorf("pinned %s (%.3f s) beats the free search's best (%.3f s)", r.Layout, r.IterSec, rs[0].IterSec)
		}
	}
}

func TestFasterHardwareIsFaster(t *testing.T) {
	// The what-if the planner is for: the same job on H100 instead of A100.
	var iters []float64
	for _, g := range []string{"a100-80gb", "h100", "h200", "b200"} {
		rs, err := Search(newJob("gpt3-175b", g, 1024, 1536).Config, AnyLayout(), 1)
		if err != nil {
			t.Fatal(g, err)
		}
		iters = append(iters, rs[0].IterSec)
	}
	for i := 1; i < len(iters); i++ {
		if !(iters[i] < iters[i-1]) {
			t.Errorf("iteration times A100, H100, H200, B200 = %.2f: want decreasing", iters)
		}
	}
	if speedup := iters[0] / iters[1]; speedup < 2 || speedup > 3.5 {
		t.Errorf("H100 is %.2fx A100 on GPT-3 175B; expected 2-3.5x", speedup)
	}
}

func TestGEMMEfficiencyFollowsTilesAndWaves(t *testing.T) {
	g, _ := LookupGPU("a100-80gb")
	big := g.GEMMEfficiency(8192, 8192, 8192)
	if big > g.MatmulEff+1e-12 || big < 0.97*g.MatmulEff {
		t.Errorf("8192^3 GEMM at %.3f of peak, want just under the sustained %.3f", big, g.MatmulEff)
	}
	// Shrinking the tensor-parallel shard of a GPT layer lowers efficiency.
	prev := 1.0
	for _, n := range []int{12288, 3072, 768, 192} {
		e := g.GEMMEfficiency(2048, n, 2048)
		if e > prev+1e-12 {
			t.Errorf("N=%d: efficiency %.3f above N four times larger (%.3f)", n, e, prev)
		}
		prev = e
	}
	if prev > 0.5*g.MatmulEff {
		t.Errorf("2048x192x2048 at %.3f of peak; a GEMM of 96 tiles on 108 SMs should run well below the sustained rate", prev)
	}
	// One 256x128 tile more than the SMs takes a second wave.
	full := g.gemmTime(256*12, 128*9, 4096, 1, 2)    // 108 tiles: one wave
	extra := g.gemmTime(256*12, 128*9+1, 4096, 1, 2) // a ragged column of tiles
	if extra < 1.3*full {
		t.Errorf("a partial second wave costs %.2fx, want a clear step", extra/full)
	}
}

func TestClusterFromFabric(t *testing.T) {
	tests := []struct {
		preset string
		gpus   int
		want   Cluster
	}{
		{"ndv5", 256, Cluster{GPUsPerNode: 8, NVLinkGPUs: 8, NICGBps: 50}},
		{"ndv4", 64, Cluster{GPUsPerNode: 8, NVLinkGPUs: 8, NICGBps: 25}},
		{"gb200-nvl72", 288, Cluster{GPUsPerNode: 4, NVLinkGPUs: 72, NICGBps: 50}},
	}
	for _, tc := range tests {
		t.Run(tc.preset, func(t *testing.T) {
			f, err := topology.Generate(tc.preset, tc.gpus)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ClusterFromFabric(f, "")
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got, cmpopts.IgnoreFields(Cluster{}, "GPU", "Source")); d != "" {
				t.Errorf("cluster (-want +got):\n%s", d)
			}
			if want := topology.Presets[tc.preset].Class.GPUModel; !strings.EqualFold(got.GPU.Name, want) && !strings.HasPrefix(strings.ToLower(want), strings.ToLower(got.GPU.Aliases[0])) {
				t.Errorf("GPU %s, fabric says %s", got.GPU.Name, want)
			}
		})
	}
	if _, err := LookupGPU("v100"); err == nil || !strings.Contains(err.Error(), "a100-80gb") {
		t.Errorf("unknown GPU error %v should list the known ones", err)
	}
}

func TestConfigErrorsNameTheFlag(t *testing.T) {
	c := newJob("gpt3-175b", "h100", 1024, 1536).Config
	tests := []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.GPUs = 0 }, "--gpus"},
		{func(c *Config) { c.GlobalBatch = -1 }, "--global-batch"},
		{func(c *Config) { c.Model.Heads = 100 }, "--hidden 12288 is not a multiple of --heads 100"},
		{func(c *Config) { c.Model.KVHeads = 7 }, "--kv-heads 7"},
		{func(c *Config) { c.Model.Seq = 0 }, "--seq"},
	}
	for _, tc := range tests {
		cc := c
		tc.mod(&cc)
		if _, err := Search(cc, AnyLayout(), 1); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want it to name %q", err, tc.want)
		}
	}
}

// BenchmarkSearch1T16k is the speed target: the full search for a
// 1T-parameter model on 16,384 GPUs.
func BenchmarkSearch1T16k(b *testing.B) {
	c := newJob("gpt-1t", "h100", 16384, 4096).Config
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Search(c, AnyLayout(), 5); err != nil {
			b.Fatal(err)
		}
	}
}
