package plan

import (
	"fmt"
	"math"
)

const gib = 1 << 30

// Memory is the per-GPU memory of the most loaded pipeline stage, in GiB
// (the unit a GPU's "80GB" is sold in).
type Memory struct {
	Weights     float64 `json:"weights_gb"`
	Gradients   float64 `json:"gradients_gb"`
	Optimizer   float64 `json:"optimizer_gb"`
	Activations float64 `json:"activations_gb"`
	Buffers     float64 `json:"buffers_gb"` // runtime reserve, communication and gather buffers
	Total       float64 `json:"total_gb"`
}

// Breakdown splits one iteration's time, in seconds, on the slowest stage.
// The parts add up to the iteration time.
type Breakdown struct {
	GEMM      float64 `json:"gemm_s"`      // dense matmuls
	Attention float64 `json:"attention_s"` // attention core (scores, softmax, weighted sum)
	Memory    float64 `json:"memory_bound_s"`
	TPComm    float64 `json:"tp_comm_s"`   // tensor-parallel collectives over NVLink
	PPComm    float64 `json:"pp_comm_s"`   // pipeline sends/receives left exposed
	Bubble    float64 `json:"bubble_s"`    // pipeline fill and drain
	DPComm    float64 `json:"dp_comm_s"`   // gradient reduction (and ZeRO gathers) left exposed
	Optimizer float64 `json:"optimizer_s"` // Adam step
}

// Sum is the iteration time.
func (b Breakdown) Sum() float64 {
	return b.GEMM + b.Attention + b.Memory + b.TPComm + b.PPComm + b.Bubble + b.DPComm + b.Optimizer
}

// Result is the prediction for one layout.
type Result struct {
	Layout
	RecomputeName string    `json:"recompute"`
	IterSec       float64   `json:"iter_s"`
	ModelTFLOPS   float64   `json:"tflops_per_gpu"`    // model FLOPs (no recomputation) per second per GPU
	HWTFLOPS      float64   `json:"hw_tflops_per_gpu"` // hardware FLOPs, recomputation included
	MFU           float64   `json:"mfu"`               // model FLOPs / dense BF16 peak
	HFU           float64   `json:"hfu"`               // hardware FLOPs / dense BF16 peak
	MemoryGB      float64   `json:"memory_gb"`
	Fits          bool      `json:"fits"`
	Mem           Memory    `json:"memory"`
	Time          Breakdown `json:"time"`
	Microbatches  int       `json:"microbatches"` // per pipeline per iteration
	TokensPerSec  float64   `json:"tokens_per_s"`
	Tokens        float64   `json:"tokens,omitempty"`
	TrainDays     float64   `json:"train_days,omitempty"`
	GPUHours      float64   `json:"gpu_hours,omitempty"`
}

// pass is the time of one pass of one layer (or stage extra) over one
// microbatch, by kind.
type pass struct{ gemm, attn, mem, tp float64 }

func (p pass) add(q pass) pass {
	return pass{p.gemm + q.gemm, p.attn + q.attn, p.mem + q.mem, p.tp + q.tp}
}
func (p pass) scale(f float64) pass { return pass{p.gemm * f, p.attn * f, p.mem * f, p.tp * f} }
func (p pass) total() float64       { return p.gemm + p.attn + p.mem + p.tp }

// layerKey identifies what a layer's time depends on.
type layerKey struct {
	tp, mb int
	sp     bool
	rc     Recompute
}

// estimator evaluates layouts of one config, caching per-layer costs so
// that a search evaluates each (tp, microbatch, sp, recompute) once.
type estimator struct {
	c      Config
	layers map[layerKey]pass // forward + backward + recomputation of one layer
	fwd    map[layerKey]pass // forward alone (overlap windows)
	extra  map[layerKey][2]pass
}

func newEstimator(c Config) *estimator {
	return &estimator{c: c, layers: map[layerKey]pass{}, fwd: map[layerKey]pass{}, extra: map[layerKey][2]pass{}}
}

// Estimate predicts one fully specified layout. It returns an
// *InfeasibleError when the layout breaks a rule or does not fit in memory;
// the Result is filled in either way when the rules hold.
func Estimate(c Config, l Layout) (Result, error) {
	if err := c.Validate(); err != nil {
		return Result{}, err
	}
	e := newEstimator(c)
	if why := c.check(l); len(why) > 0 {
		return Result{}, &InfeasibleError{Layout: l, Reasons: why}
	}
	r := e.evaluate(l)
	if !r.Fits {
		return r, &InfeasibleError{Layout: l, Reasons: []string{e.memoryReason(r)}}
	}
	return r, nil
}

func (e *estimator) memoryReason(r Result) string {
	g := e.c.Cluster.GPU
	return fmt.Sprintf("needs %.1f GB per GPU, the %s has %.4g (weights %.1f, gradients %.1f, optimizer %.1f, activations %.1f, buffers %.1f)",
		r.MemoryGB, g.Name, g.MemoryGiB, r.Mem.Weights, r.Mem.Gradients, r.Mem.Optimizer, r.Mem.Activations, r.Mem.Buffers)
}

// effRecompute is the recomputation that actually happens: with fused
// attention the scores are never stored, so selective recomputation has
// nothing to do.
func (e *estimator) effRecompute(r Recompute) Recompute {
	if r == RecomputeSelective && e.c.Stack.FlashAttention {
		return RecomputeNone
	}
	return r
}

// evaluate computes time and memory of a layout that passed check.
func (e *estimator) evaluate(l Layout) Result {
	c := e.c
	m := c.Model
	rc := e.effRecompute(l.Recompute)
	key := layerKey{l.TP, l.Microbatch, l.SeqParallel, rc}
	layer, ok := e.layers[key]
	if !ok {
		f, b, re := e.layerPasses(key)
		layer = f.add(b).add(re)
		e.layers[key] = layer
		e.fwd[key] = f
	}
	layerFwd := e.fwd[key]
	ex, ok := e.extra[key]
	if !ok {
		ex = e.stageExtras(key)
		e.extra[key] = ex
	}
	perStage := float64(stageLayers(m.Layers, l.PP))
	body := layer.scale(perStage)
	// Weight-gradient accumulation across microbatches, when it is a kernel
	// of its own: read the running sum and the new gradient, write the sum.
	if !c.Stack.GradAccumFusion {
		body.mem += perStage * m.LayerParams() / float64(l.TP) * 3 * c.Stack.GradBytes / e.hbm()
	}
	first, last := body.add(ex[0]), body.add(ex[1])
	if l.PP == 1 {
		first = body.add(ex[0]).add(ex[1])
		last = first
	}
	slow := last
	if first.total() > last.total() {
		slow = first
	}
	p2p := e.p2pPerMicrobatch(l)
	mbs := c.GlobalBatch / (l.DP * l.Microbatch)
	nmb := float64(mbs)

	var t Breakdown
	t.GEMM = nmb * slow.gemm
	t.Attention = nmb * slow.attn
	t.Memory = nmb * slow.mem
	t.TPComm = nmb * slow.tp
	if c.Stack.OverlapP2P {
		t.PPComm = nmb * e.hidden(p2p, math.Inf(1))
	} else {
		t.PPComm = nmb * p2p
	}
	if l.PP > 1 {
		mean := (float64(l.PP-2)*body.total() + first.total() + last.total()) / float64(l.PP)
		if !c.Stack.OverlapP2P {
			mean += p2p
		}
		t.Bubble = float64(l.PP-1) / float64(l.VP) * mean
	}
	params := e.stageParams(l)
	t.DPComm = e.dpTime(l, params, nmb, layerFwd.scale(perStage).total(), (layer.total()-layerFwd.total())*perStage)
	shard := 1.0
	if l.ZeRO >= 1 {
		shard = float64(l.DP)
	}
	// Adam step: read and write the fp32 master weights and both moments,
	// read the gradient (twice, with the norm for clipping), write the BF16
	// copy: about 32 bytes per parameter.
	t.Optimizer = params / shard * 32 / e.hbm()

	r := Result{Layout: l, RecomputeName: l.Recompute.String(), Time: t, Microbatches: mbs}
	r.IterSec = t.Sum()
	tokens := float64(c.GlobalBatch) * float64(m.Seq)
	n := float64(c.GPUs)
	peak := c.Cluster.GPU.BF16TFLOPS
	r.ModelTFLOPS = m.ModelFLOPsPerToken() * tokens / r.IterSec / n / 1e12
	r.HWTFLOPS = m.HardwareFLOPsPerToken(rc) * tokens / r.IterSec / n / 1e12
	r.MFU = r.ModelTFLOPS / peak
	r.HFU = r.HWTFLOPS / peak
	r.TokensPerSec = tokens / r.IterSec
	r.Tokens = c.Tokens
	if r.Tokens == 0 {
		r.Tokens = m.Tokens
	}
	if r.Tokens > 0 {
		sec := r.Tokens / r.TokensPerSec
		r.TrainDays = sec / 86400
		r.GPUHours = sec * n / 3600
	}
	r.Mem = e.memory(l, rc, mbs)
	r.MemoryGB = r.Mem.Total
	r.Fits = r.Mem.Total <= c.Cluster.GPU.MemoryGiB
	return r
}

// hidden is the time an overlapped transfer of comm seconds adds when
// window seconds of compute run beside it: what sticks out of the window,
// plus the compute lost to the SMs NCCL occupies while it runs.
func (e *estimator) hidden(comm, window float64) float64 {
	over := math.Min(comm, window)
	return comm - over + over*ncclSMs/float64(e.c.Cluster.GPU.SMs)
}

func (e *estimator) hbm() float64 { return e.c.Cluster.GPU.HBMGBps * 1e9 * hbmEff }

// allReduce is the time of an NCCL ring all-reduce of bytes among n ranks
// with bus bandwidth bw (bytes/s): each rank sends and receives 2(n-1)/n of
// the data.
func allReduce(bytes float64, n int, bw, lat float64) float64 {
	if n <= 1 || bytes <= 0 {
		return 0
	}
	return lat*math.Log2(float64(n))*2 + 2*float64(n-1)/float64(n)*bytes/bw
}

// gather is a reduce-scatter or an all-gather: half an all-reduce.
func gather(bytes float64, n int, bw, lat float64) float64 {
	if n <= 1 || bytes <= 0 {
		return 0
	}
	return lat*math.Log2(float64(n)) + float64(n-1)/float64(n)*bytes/bw
}

func (e *estimator) nvlinkBW() float64 {
	return e.c.Cluster.GPU.NVLinkGBps / 2 * 1e9 * nvlinkEff
}

// layerPasses is the forward, backward and recomputation time of one layer
// for one microbatch on one GPU.
func (e *estimator) layerPasses(k layerKey) (fwd, bwd, re pass) {
	c := e.c
	m := c.Model
	g := &c.Cluster.GPU
	t := float64(k.tp)
	T := float64(k.mb * m.Seq) // tokens in a microbatch
	h := float64(m.Hidden)
	s := float64(m.Seq)
	dh := float64(m.HeadDim())
	ffn := float64(m.FFN)
	wgradOut := 2.0
	if c.Stack.GradAccumFusion {
		wgradOut = 8
	}
	// The four linear layers, as (N, K) with M = T tokens.
	linears := [][2]float64{{m.qkvWidth() / t, h}, {h, h / t}, {m.mlpIn() / t, h}, {h, ffn / t}}
	for _, nk := range linears {
		n, kk := nk[0], nk[1]
		fwd.gemm += g.gemmTime(T, n, kk, 1, 2)
		bwd.gemm += g.gemmTime(T, kk, n, 1, 2)        // input gradient
		bwd.gemm += g.gemmTime(kk, n, T, 1, wgradOut) // weight gradient
	}
	// Attention core.
	heads := float64(m.Heads) / t
	batch := float64(k.mb) * heads
	var scoreFwd, scoreBwd float64 // bytes over the s x s scores, per microbatch
	if c.Stack.FlashAttention {
		flops := 4 * T * s * h / t * 0.5 // causal: half the blocks are skipped
		rate := g.BF16TFLOPS * 1e12 * flashEff
		fwd.attn = flops / rate
		bwd.attn = 2 * flops / rate
	} else {
		fwd.attn = g.gemmTime(s, s, dh, batch, 2) + g.gemmTime(s, dh, s, batch, 2)
		bwd.attn = g.gemmTime(s, s, dh, batch, 2) + 3*g.gemmTime(s, dh, s, batch, 2)
		// Fused scale-mask-softmax reads and writes the scores; dropout reads
		// them, writes them and a one-byte mask: 9 bytes per score forward.
		// Backward: dropout (read grad and mask, write) and softmax (read
		// output and grad, write): 11 bytes.
		elems := batch * s * s
		scoreFwd, scoreBwd = 9*elems, 11*elems
	}
	// Memory-bound kernels, bytes per token. Unsharded tensors have the full
	// hidden size on every tensor-parallel rank unless sequence parallelism
	// splits them: two LayerNorms (read, write: 4h bytes each) and two
	// bias-dropout-residual-adds (read two, write one, one-byte mask: 7h).
	u := 22 * h
	if k.sp {
		u /= t
	}
	// Sharded: the fused bias-GeLU (or SwiGLU) reads the first MLP output and
	// writes the activation; without fused attention Q, K, V are copied into
	// the batched-GEMM layout and the context back (read and write each).
	sh := 2 * (m.mlpIn() + ffn) / t
	if !c.Stack.FlashAttention {
		sh += 4 * (m.qkvWidth() + h) / t
	}
	hbm := e.hbm()
	fwd.mem = ((u+sh)*T + scoreFwd) / hbm
	// Backward of an elementwise kernel reads its input and the output
	// gradient and writes the input gradient, and the residual stream adds
	// the branch gradients: about twice the forward traffic.
	bwd.mem = (2*(u+sh)*T + scoreBwd) / hbm

	// Tensor-parallel collectives: one all-reduce (or reduce-scatter plus
	// all-gather with sequence parallelism) after the attention and after the
	// MLP in forward, two for the input gradients in backward.
	if k.tp > 1 {
		msg := T * h * 2
		ar := allReduce(msg, k.tp, e.nvlinkBW(), nvlinkLatency)
		if k.sp {
			ar = 2 * gather(msg, k.tp, e.nvlinkBW(), nvlinkLatency)
		}
		fwd.tp = 2 * ar
		if c.Stack.OverlapTPBackward {
			// Each backward all-reduce runs beside the weight-gradient GEMM
			// of the QKV or first MLP layer.
			bwd.tp = e.hidden(ar, g.gemmTime(h, linears[0][0], T, 1, wgradOut)) +
				e.hidden(ar, g.gemmTime(h, linears[2][0], T, 1, wgradOut))
		} else {
			bwd.tp = 2 * ar
		}
	}
	switch k.rc {
	case RecomputeFull:
		re = fwd
	case RecomputeSelective:
		re = pass{attn: fwd.attn, mem: scoreFwd / hbm}
	}
	return fwd, bwd, re
}

// stageExtras is the per-microbatch work of the first stage (embedding) and
// of the last (final LayerNorm, output layer, cross-entropy).
func (e *estimator) stageExtras(k layerKey) [2]pass {
	c := e.c
	m := c.Model
	g := &c.Cluster.GPU
	t := float64(k.tp)
	T := float64(k.mb * m.Seq)
	h := float64(m.Hidden)
	v := float64(m.Vocab) / t
	hbm := e.hbm()
	var first, last pass
	// Embedding lookup and its gradient (scatter-add): a few passes over
	// the T x h output; the vocabulary-parallel embedding all-reduces it.
	first.mem = 3 * T * h * 2 / hbm
	if k.tp > 1 {
		first.tp = allReduce(T*h*2, k.tp, e.nvlinkBW(), nvlinkLatency)
	}
	wgradOut := 2.0
	if c.Stack.GradAccumFusion {
		wgradOut = 8
	}
	last.gemm = g.gemmTime(T, v, h, 1, 2) + g.gemmTime(T, h, v, 1, 2) + g.gemmTime(h, v, T, 1, wgradOut)
	// Final LayerNorm, then the vocabulary-parallel cross-entropy in FP32:
	// cast, max, exp and sum, the gradient, cast back: about 40 bytes per
	// logit forward and backward together.
	last.mem = (12*T*h + 40*T*v) / hbm
	if k.tp > 1 {
		last.tp = 3 * allReduce(T*4, k.tp, e.nvlinkBW(), nvlinkLatency)
	}
	return [2]pass{first, last}
}

// crossNode says whether a group of ranks spaced stride apart, size of
// them, leaves the NVLink domain. Megatron orders ranks tensor-parallel
// first, then data-parallel, then pipeline.
func (e *estimator) crossNode(stride, size int) bool {
	return stride*size > e.c.Cluster.NVLinkGPUs
}

// p2pPerMicrobatch is the pipeline send/receive time per microbatch on one
// rank: an activation forward and a gradient backward per model chunk, each
// 1/tp of the microbatch's hidden states (Megatron's scatter/gather
// optimisation, or sequence parallelism).
func (e *estimator) p2pPerMicrobatch(l Layout) float64 {
	if l.PP == 1 {
		return 0
	}
	c := e.c
	msg := float64(l.Microbatch*c.Model.Seq) * float64(c.Model.Hidden) * 2 / float64(l.TP)
	var one float64
	if e.crossNode(l.TP*l.DP, l.PP) {
		one = ibLatency + msg/(c.Cluster.NICGBps*1e9*ibEff)
	} else {
		one = nvlinkLatency + msg/e.nvlinkBW()
	}
	return 2 * float64(l.VP) * one
}

// dpBandwidth is the bus bandwidth of the data-parallel group: NVLink when
// it stays in one NVLink domain, otherwise one InfiniBand rail per member
// that shares the domain (NCCL runs one ring per rail), capped by NVLink.
func (e *estimator) dpBandwidth(l Layout) float64 {
	cl := e.c.Cluster
	nv := e.nvlinkBW()
	if !e.crossNode(l.TP, l.DP) {
		return nv
	}
	k := max(1, min(l.DP, cl.NVLinkGPUs/l.TP))
	return math.Min(nv, float64(k)*cl.NICGBps*1e9*ibEff)
}

// stageParams is the parameter count on one GPU of the largest stage.
func (e *estimator) stageParams(l Layout) float64 {
	m := e.c.Model
	t := float64(l.TP)
	body := float64(stageLayers(m.Layers, l.PP)) * m.LayerParams() / t
	emb := float64(m.Vocab) * float64(m.Hidden) / t
	firstP := body + emb
	if m.LearnedPositions {
		firstP += float64(m.Seq) * float64(m.Hidden)
	}
	if l.PP == 1 {
		if m.Untied {
			firstP += emb
		}
		return firstP
	}
	lastP := body + emb // the output layer, or the tied copy of the embedding
	return math.Max(firstP, lastP)
}

// dpTime is the exposed time of gradient reduction, ZeRO's gathers, and the
// all-reduce of the tied embedding between the first and last stage.
// fwdT and bwdT are one microbatch's forward and backward on the stage.
func (e *estimator) dpTime(l Layout, params, nmb, fwdT, bwdT float64) float64 {
	c := e.c
	var t float64
	if l.PP > 1 && !c.Model.Untied {
		emb := float64(c.Model.Vocab) * float64(c.Model.Hidden) / float64(l.TP) * c.Stack.GradBytes
		t += allReduce(emb, 2, c.Cluster.NICGBps*1e9*ibEff, ibLatency)
	}
	if l.DP == 1 {
		return t
	}
	bw := e.dpBandwidth(l)
	n := l.DP
	grads := params * c.Stack.GradBytes
	weights := params * 2
	overlap := c.Stack.OverlapGradReduce
	expose := func(comm, window float64) float64 {
		if !overlap {
			return comm
		}
		return e.hidden(comm, window)
	}
	switch l.ZeRO {
	case 0:
		t += expose(allReduce(grads, n, bw, ibLatency), bwdT)
	case 1:
		t += expose(gather(grads, n, bw, ibLatency), bwdT) + expose(gather(weights, n, bw, ibLatency), fwdT)
	case 2:
		// Gradients are reduce-scattered every microbatch.
		t += nmb*expose(gather(grads, n, bw, ibLatency), bwdT) + expose(gather(weights, n, bw, ibLatency), fwdT)
	case 3:
		// Parameters are gathered for every forward and backward (and the
		// recomputation), gradients reduce-scattered, every microbatch.
		ag := 2.0
		if l.Recompute == RecomputeFull {
			ag = 3
		}
		comm := ag*gather(weights, n, bw, ibLatency) + gather(grads, n, bw, ibLatency)
		t += nmb * expose(comm, fwdT+bwdT)
	}
	return t
}

// memory is the per-GPU memory of the most loaded stage.
func (e *estimator) memory(l Layout, rc Recompute, mbs int) Memory {
	c := e.c
	m := c.Model
	t := float64(l.TP)
	dp := float64(l.DP)
	p := float64(l.PP)
	T := float64(l.Microbatch * m.Seq)
	h := float64(m.Hidden)
	params := e.stageParams(l)
	var mem Memory
	mem.Weights = params * 2
	mem.Gradients = params * c.Stack.GradBytes
	mem.Optimizer = params * 12 // fp32 master weights, Adam's two moments
	if l.ZeRO >= 1 {
		mem.Optimizer /= dp
	}
	if l.ZeRO >= 2 {
		mem.Gradients /= dp
	}
	if l.ZeRO >= 3 {
		mem.Weights /= dp
	}
	// Activations stored per token per layer (Korthikanti et al. 2022,
	// section 4, generalised to GQA and gated MLPs). Outside the
	// tensor-parallel region (unless sequence parallelism splits them): the
	// inputs of both LayerNorms, of QKV and of the first MLP layer (2h
	// each) and two one-byte dropout masks. Inside: Q, K, V, the input of
	// the output projection, of the activation function and of the second
	// MLP layer. Without fused attention, the softmax output, its dropout
	// mask and output: 5 bytes per score.
	u := 10 * h
	if l.SeqParallel {
		u /= t
	}
	kv := float64(m.KVHeads * m.HeadDim())
	sh := (2*h + 4*kv + 2*h + 2*m.mlpIn() + 2*float64(m.FFN)) / t
	scores := 0.0
	if !c.Stack.FlashAttention {
		scores = 5 * float64(m.Heads) / t * float64(m.Seq)
	}
	full := u + sh + scores
	stored := full
	var working float64
	switch rc {
	case RecomputeSelective:
		stored = u + sh
		working = scores * T
	case RecomputeFull:
		stored = 2 * h
		if l.SeqParallel {
			stored /= t
		}
		working = full * T
	}
	// Microbatches in flight on the first stage: one without pipelining, pp
	// for 1F1B, pp*(1+(pp-1)/(pp*vp)) for the interleaved schedule.
	inflight := 1.0
	if l.PP > 1 {
		inflight = p
		if l.VP > 1 {
			inflight = p * (1 + (p-1)/(p*float64(l.VP)))
		}
		inflight = math.Min(inflight, float64(mbs)) // never more than there are
	}
	perStage := float64(stageLayers(m.Layers, l.PP))
	acts := perStage*stored*T*inflight + working
	// Logits on the last stage: BF16 output, its FP32 copy and gradient.
	logits := T * float64(m.Vocab) / t * 10
	if l.PP == 1 {
		acts += logits
	} else {
		// The last stage holds one microbatch with 1F1B, ((vp-1)*pp+1)/vp
		// microbatches' worth of chunks with the interleaved schedule.
		lastInflight := math.Min(float64(mbs), (float64(l.VP-1)*p+1)/float64(l.VP))
		acts = math.Max(acts, perStage*stored*T*lastInflight+working+logits)
	}
	mem.Activations = acts
	buf := runtimeReserveGiB * gib
	if l.TP > 1 {
		buf += T * h * 2 // all-reduce output
	}
	if l.ZeRO == 3 {
		buf += 2 * m.LayerParams() / t * 2 // two layers gathered ahead
	}
	mem.Buffers = buf
	for _, p := range []*float64{&mem.Weights, &mem.Gradients, &mem.Optimizer, &mem.Activations, &mem.Buffers} {
		*p /= gib
	}
	mem.Total = mem.Weights + mem.Gradients + mem.Optimizer + mem.Activations + mem.Buffers
	return mem
}
