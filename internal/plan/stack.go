package plan

import (
	"fmt"
	"sort"
	"strings"
)

// Stack is the training software: which kernels and overlaps it has. The
// same layout runs at different speeds on Megatron-LM of 2021 and on today's
// Megatron-Core, and the validation must model the software that was measured.
type Stack struct {
	Name string
	// FlashAttention fuses the attention core (no s x s score tensor in
	// memory, causal blocks skipped). Otherwise the scores are materialised
	// and Megatron's fused scale-mask-softmax and dropout run over them.
	FlashAttention bool
	// GradAccumFusion accumulates weight gradients into fp32 main grads in the
	// wgrad GEMM's epilogue; otherwise a separate kernel adds each
	// microbatch's gradient (read two, write one).
	GradAccumFusion bool
	// GradBytes is the size of one gradient element as accumulated and
	// reduced across data-parallel ranks.
	GradBytes float64
	// OverlapGradReduce hides the data-parallel gradient reduction (and the
	// parameter all-gather of ZeRO) behind backward and forward compute.
	OverlapGradReduce bool
	// OverlapP2P hides pipeline sends and receives behind compute.
	OverlapP2P bool
	// OverlapTPBackward runs the all-reduce of the input gradient of a
	// column-parallel layer during its weight-gradient GEMM.
	OverlapTPBackward bool
	// SequenceParallel: the stack supports sequence parallelism.
	SequenceParallel bool
	// UnevenStages lets pipeline stages differ by a layer when pp does not
	// divide the layers (Megatron-Core's first/last-stage layer counts; Llama
	// 3 405B ran 126 layers on 16 stages this way).
	UnevenStages bool
}

// Stacks are the software presets.
var Stacks = map[string]Stack{
	// Megatron-Core (2024-): Transformer Engine flash attention, fused
	// gradient accumulation into fp32 main grads, --overlap-grad-reduce
	// --overlap-param-gather, overlapped pipeline p2p, asynchronous
	// tensor-parallel all-reduce in backward, sequence parallelism.
	"megatron-core": {Name: "megatron-core", FlashAttention: true, GradAccumFusion: true, GradBytes: 4,
		OverlapGradReduce: true, OverlapP2P: true, OverlapTPBackward: true, SequenceParallel: true, UnevenStages: true},
	// Megatron-LM as measured in Narayanan et al., SC'21 (arXiv 2104.04473):
	// fp16 mixed precision, fused bias-GeLU, bias-dropout-add and
	// scale-mask-softmax kernels but materialised attention scores, gradient
	// all-reduce after the pipeline flush, blocking p2p with the
	// scatter/gather optimisation, no sequence parallelism (2022).
	"megatron-sc21": {Name: "megatron-sc21", GradBytes: 2},
}

// StackNames lists the presets in order.
func StackNames() []string {
	n := make([]string, 0, len(Stacks))
	for k := range Stacks {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// LookupStack finds a software preset.
func LookupStack(name string) (Stack, error) {
	s, ok := Stacks[strings.ToLower(name)]
	if !ok {
		return Stack{}, fmt.Errorf("unknown --stack %q (want one of %s)", name, strings.Join(StackNames(), ", "))
	}
	return s, nil
}
