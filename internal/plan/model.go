package plan

import (
	"fmt"
	"sort"
	"strings"
)

// Model is a decoder-only transformer.
type Model struct {
	Name    string `json:"name"`
	Layers  int    `json:"layers"`
	Hidden  int    `json:"hidden"`
	Heads   int    `json:"heads"`
	KVHeads int    `json:"kv_heads"` // key/value heads (GQA); Heads for multi-head attention
	FFN     int    `json:"ffn"`      // MLP inner size
	Seq     int    `json:"seq"`
	Vocab   int    `json:"vocab"`
	// Gated is a SwiGLU MLP (three matrices: gate, up, down) as in Llama;
	// otherwise a GeLU MLP of two.
	Gated bool `json:"gated"`
	// Untied output layer (Llama) instead of sharing the input embedding
	// (GPT). Learned positions are GPT's position table; Llama uses RoPE.
	Untied           bool `json:"untied"`
	LearnedPositions bool `json:"learned_positions"`
	// Tokens is the published training budget, used when --tokens is not
	// given (0: unknown).
	Tokens float64 `json:"-"`
}

// Models are the presets. Shapes are the published ones: GPT-3 175B (Brown
// et al. 2020, Table 2.1), Megatron-Turing NLG 530B (Smith et al. 2022,
// arXiv 2201.11990), Llama 3 70B and 405B (Llama 3 Herd of Models, 2024,
// Table 3), and the 1T GPT of Narayanan et al. SC'21 Table 1. GPT vocabularies
// are padded to 51,200 as Megatron does.
var Models = map[string]Model{
	"gpt3-175b": {Name: "gpt3-175b", Layers: 96, Hidden: 12288, Heads: 96, KVHeads: 96, FFN: 4 * 12288,
		Seq: 2048, Vocab: 51200, LearnedPositions: true, Tokens: 300e9},
	"mt-nlg-530b": {Name: "mt-nlg-530b", Layers: 105, Hidden: 20480, Heads: 128, KVHeads: 128, FFN: 4 * 20480,
		Seq: 2048, Vocab: 51200, LearnedPositions: true, Tokens: 270e9},
	"llama3-70b": {Name: "llama3-70b", Layers: 80, Hidden: 8192, Heads: 64, KVHeads: 8, FFN: 28672,
		Seq: 8192, Vocab: 128256, Gated: true, Untied: true, Tokens: 15e12},
	"llama3-405b": {Name: "llama3-405b", Layers: 126, Hidden: 16384, Heads: 128, KVHeads: 8, FFN: 53248,
		Seq: 8192, Vocab: 128256, Gated: true, Untied: true, Tokens: 15.6e12},
	"gpt-1t": {Name: "gpt-1t", Layers: 128, Hidden: 25600, Heads: 160, KVHeads: 160, FFN: 4 * 25600,
		Seq: 2048, Vocab: 51200, LearnedPositions: true, Tokens: 450e9},
}

// ModelNames lists the presets in order.
func ModelNames() []string {
	n := make([]string, 0, len(Models))
	for k := range Models {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// LookupModel finds a preset.
func LookupModel(name string) (Model, error) {
	m, ok := Models[strings.ToLower(name)]
	if !ok {
		return Model{}, fmt.Errorf("unknown model %q (want one of %s)", name, strings.Join(ModelNames(), ", "))
	}
	return m, nil
}

// GPTModel is a GPT-style model (GeLU MLP of 4h, tied embeddings, learned
// positions) of the given shape, as in the Megatron papers.
func GPTModel(layers, hidden, heads, seq, vocab int) Model {
	return Model{Name: fmt.Sprintf("gpt-l%d-h%d", layers, hidden), Layers: layers, Hidden: hidden, Heads: heads,
		KVHeads: heads, FFN: 4 * hidden, Seq: seq, Vocab: vocab, LearnedPositions: true}
}

// Validate checks the shape; errors name the flag that sets the field.
func (m Model) Validate() error {
	pos := []struct {
		flag string
		v    int
	}{{"--layers", m.Layers}, {"--hidden", m.Hidden}, {"--heads", m.Heads}, {"--kv-heads", m.KVHeads},
		{"--ffn", m.FFN}, {"--seq", m.Seq}, {"--vocab", m.Vocab}}
	for _, p := range pos {
		if p.v <= 0 {
			return fmt.Errorf("%s must be positive, got %d", p.flag, p.v)
		}
	}
	if m.Hidden%m.Heads != 0 {
		return fmt.Errorf("--hidden %d is not a multiple of --heads %d", m.Hidden, m.Heads)
	}
	if m.KVHeads > m.Heads || m.Heads%m.KVHeads != 0 {
		return fmt.Errorf("--kv-heads %d must divide --heads %d", m.KVHeads, m.Heads)
	}
	return nil
}

// HeadDim is the size of one attention head.
func (m Model) HeadDim() int { return m.Hidden / m.Heads }

// qkvWidth is the output width of the fused QKV projection.
func (m Model) qkvWidth() float64 {
	return float64(m.Hidden) + 2*float64(m.KVHeads*m.HeadDim())
}

// mlpIn is the output width of the first MLP projection (gate and up for a
// gated MLP).
func (m Model) mlpIn() float64 {
	if m.Gated {
		return 2 * float64(m.FFN)
	}
	return float64(m.FFN)
}

// LayerParams is the parameter count of one transformer layer: the QKV,
// output, and MLP matrices, their biases (GPT) and two LayerNorms.
func (m Model) LayerParams() float64 {
	h := float64(m.Hidden)
	w := h*m.qkvWidth() + h*h + h*m.mlpIn() + float64(m.FFN)*h
	b := 4 * h // LayerNorm scales and shifts
	if !m.Gated {
		b += m.qkvWidth() + h + m.mlpIn() + h // biases
	}
	return w + b
}

// EmbeddingParams counts the input embedding, the position table and the
// output layer when it is not tied.
func (m Model) EmbeddingParams() float64 {
	e := float64(m.Vocab) * float64(m.Hidden)
	if m.Untied {
		e *= 2
	}
	if m.LearnedPositions {
		e += float64(m.Seq) * float64(m.Hidden)
	}
	return e
}

// Params is the total parameter count.
func (m Model) Params() float64 {
	return float64(m.Layers)*m.LayerParams() + m.EmbeddingParams() + 2*float64(m.Hidden)
}

// layerDenseFLOPs is the forward matmul FLOPs of one layer per token,
// outside the attention core: 2 x (weights) multiply-adds.
func (m Model) layerDenseFLOPs() float64 {
	h := float64(m.Hidden)
	return 2 * (h*m.qkvWidth() + h*h + h*m.mlpIn() + float64(m.FFN)*h)
}

// layerAttnFLOPs is the forward FLOPs of the attention core per token: the
// scores QK^T and the weighted sum PV, 2*s*h each. The causal mask is not
// subtracted, as Megatron and most MFU reports count it.
func (m Model) layerAttnFLOPs() float64 {
	return 4 * float64(m.Seq) * float64(m.Hidden)
}

// logitFLOPs is the forward FLOPs of the output layer per token.
func (m Model) logitFLOPs() float64 { return 2 * float64(m.Hidden) * float64(m.Vocab) }

// ModelFLOPsPerToken is forward plus backward (3x forward) per token, the
// numerator of MFU: it ignores any recomputation.
func (m Model) ModelFLOPsPerToken() float64 {
	l := float64(m.Layers)
	return 3 * (l*(m.layerDenseFLOPs()+m.layerAttnFLOPs()) + m.logitFLOPs())
}

// HardwareFLOPsPerToken adds what the recomputation policy runs again: the
// whole layer's forward for full recomputation (the output layer is not
// recomputed), the attention core for selective. For a GPT with full
// recomputation this is Narayanan et al.'s equation (3) divided by B*s:
// 96*l*h^2*(1 + s/(6h) + V/(16lh)).
func (m Model) HardwareFLOPsPerToken(r Recompute) float64 {
	l := float64(m.Layers)
	f := m.ModelFLOPsPerToken()
	switch r {
	case RecomputeFull:
		f += l * (m.layerDenseFLOPs() + m.layerAttnFLOPs())
	case RecomputeSelective:
		f += l * m.layerAttnFLOPs()
	}
	return f
}
