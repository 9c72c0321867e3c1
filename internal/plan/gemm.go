package plan

import "math"

// tileShapes are the output tiles a tensor-core GEMM kernel may give a
// thread block (CUTLASS's default sm80/sm90 tensor-op configurations; cuBLAS
// picks among kernels of these shapes by heuristic).
var tileShapes = [][2]float64{
	{256, 128}, {128, 256}, {256, 64}, {64, 256}, {128, 128}, {128, 64}, {64, 128}, {64, 64},
}

// gemmTime models batch independent products of an (M x K) and a (K x N)
// matrix in BF16, each output element written with outBytes (2 for a BF16
// output, 8 to read and write an FP32 accumulator).
//
// The model is tile and wave quantisation (NVIDIA, "Matrix Multiplication
// Background User's Guide"): the output is cut into Tm x Tn tiles, one per
// streaming multiprocessor at a time, so the GEMM runs in
// ceil(tiles/SMs) waves and a partial last wave or a ragged edge tile costs
// as much as a full one. A tile's main loop runs at the sustained peak
// (GPU.MatmulEff) when the tile is at least 128x128 and in proportion to its
// operand re-use below that; its epilogue writes the tile through the SM's
// share of HBM bandwidth, which is what makes short-K GEMMs (wgrad of a small
// microbatch, attention scores) slower per FLOP. The kernel is the best
// tile shape for the problem, as cuBLAS's heuristics try to pick, and never
// faster than moving its operands through HBM once.
func (g *GPU) gemmTime(M, N, K, batch, outBytes float64) float64 {
	if M <= 0 || N <= 0 || K <= 0 || batch <= 0 {
		return 0
	}
	sms := float64(g.SMs)
	peakSM := g.BF16TFLOPS * 1e12 * g.MatmulEff / sms
	hbm := g.HBMGBps * 1e9 * hbmEff
	hbmSM := hbm / sms
	best := math.Inf(1)
	for _, t := range tileShapes {
		tm, tn := t[0], t[1]
		reuse := math.Min(1, tm*tn/(tm+tn)/tileSaturation)
		tiles := batch * math.Ceil(M/tm) * math.Ceil(N/tn)
		waves := math.Ceil(tiles / sms)
		perTile := 2*tm*tn*K/(peakSM*reuse) + tm*tn*outBytes/hbmSM
		best = math.Min(best, waves*perTile)
	}
	floor := batch * (2*(M*K+K*N) + M*N*outBytes) / hbm
	return math.Max(best, floor)
}

// GEMMEfficiency is the fraction of the dense BF16 peak a GEMM of this shape
// reaches in the model: what scripts/gemm_bench.py measures on a real GPU.
func (g *GPU) GEMMEfficiency(M, N, K int) float64 {
	t := g.gemmTime(float64(M), float64(N), float64(K), 1, 2)
	if t == 0 {
		return 0
	}
	return 2 * float64(M) * float64(N) * float64(K) / t / (g.BF16TFLOPS * 1e12)
}

// GEMMShape is one matmul the model assumes, with its predicted speed.
type GEMMShape struct {
	Name  string `json:"name"`
	M     int    `json:"m"`
	N     int    `json:"n"`
	K     int    `json:"k"`
	Batch int    `json:"batch"`
	// OutBytes is 2 for a BF16 output, 8 when the weight gradient is
	// accumulated into an FP32 buffer in the epilogue.
	OutBytes        int     `json:"out_bytes"`
	PredictedTFLOPS float64 `json:"predicted_tflops"`
	PredictedEff    float64 `json:"predicted_eff"` // of the dense BF16 peak
}

// GEMMs lists the matmuls of one transformer layer and of the output layer
// for one microbatch on one GPU of a layout: forward, input gradient and
// weight gradient of each linear layer, and the batched attention GEMMs when
// the stack does not fuse attention. scripts/gemm_bench.py times them.
func GEMMs(c Config, l Layout) []GEMMShape {
	m := c.Model
	g := &c.Cluster.GPU
	t := l.TP
	T := l.Microbatch * m.Seq
	h := m.Hidden
	wgradOut := 2
	if c.Stack.GradAccumFusion {
		wgradOut = 8
	}
	var out []GEMMShape
	add := func(name string, M, N, K, batch, ob int) {
		s := GEMMShape{Name: name, M: M, N: N, K: K, Batch: batch, OutBytes: ob}
		sec := g.gemmTime(float64(M), float64(N), float64(K), float64(batch), float64(ob))
		s.PredictedTFLOPS = 2 * float64(M) * float64(N) * float64(K) * float64(batch) / sec / 1e12
		s.PredictedEff = s.PredictedTFLOPS / g.BF16TFLOPS
		out = append(out, s)
	}
	linears := []struct {
		name string
		n, k int
	}{
		{"qkv", int(m.qkvWidth()) / t, h}, {"attn_out", h, h / t},
		{"mlp_in", int(m.mlpIn()) / t, h}, {"mlp_out", h, m.FFN / t},
		{"logits", m.Vocab / t, h},
	}
	for _, lin := range linears {
		add(lin.name+".fwd", T, lin.n, lin.k, 1, 2)
		add(lin.name+".dgrad", T, lin.k, lin.n, 1, 2)
		add(lin.name+".wgrad", lin.k, lin.n, T, 1, wgradOut)
	}
	if !c.Stack.FlashAttention {
		b := l.Microbatch * m.Heads / t
		s, dh := m.Seq, m.HeadDim()
		add("attn_scores.fwd", s, s, dh, b, 2)
		add("attn_context.fwd", s, dh, s, b, 2)
	}
	return out
}
