package plan

import (
	"fmt"
	"strings"
)

// Recompute is the activation recomputation policy.
type Recompute int

const (
	// RecomputeNone stores every activation the backward pass needs.
	RecomputeNone Recompute = iota
	// RecomputeSelective recomputes the attention core (Korthikanti et al.
	// 2022): the s x s scores are not stored.
	RecomputeSelective
	// RecomputeFull stores only each layer's input and runs the layer's
	// forward again in backward.
	RecomputeFull
)

var recomputeNames = []string{"none", "selective", "full"}

func (r Recompute) String() string {
	if r < 0 || int(r) >= len(recomputeNames) {
		return fmt.Sprintf("recompute(%d)", int(r))
	}
	return recomputeNames[r]
}

// ParseRecompute reads none, selective or full.
func ParseRecompute(s string) (Recompute, error) {
	for i, n := range recomputeNames {
		if strings.EqualFold(s, n) {
			return Recompute(i), nil
		}
	}
	return 0, fmt.Errorf("--recompute %q: want none, selective or full", s)
}

// Layout is one way to run the job: the parallel degrees and the memory
// savers.
type Layout struct {
	TP int `json:"tp"` // tensor parallel, inside an NVLink domain
	PP int `json:"pp"` // pipeline stages
	DP int `json:"dp"` // data-parallel replicas
	// VP is the number of virtual stages (model chunks) per pipeline rank of
	// the interleaved 1F1B schedule; 1 is the plain 1F1B schedule.
	VP          int       `json:"vp"`
	Microbatch  int       `json:"microbatch"`
	Recompute   Recompute `json:"-"`
	SeqParallel bool      `json:"sequence_parallel"`
	// ZeRO is the optimizer-state sharding stage across data-parallel
	// ranks: 1 shards optimizer states (Megatron's distributed optimizer), 2
	// also gradients, 3 also parameters.
	ZeRO int `json:"zero"`
}

func (l Layout) String() string {
	sp := ""
	if l.SeqParallel {
		sp = " sp"
	}
	return fmt.Sprintf("tp=%d pp=%d dp=%d vp=%d mb=%d recompute=%s zero=%d%s",
		l.TP, l.PP, l.DP, l.VP, l.Microbatch, l.Recompute, l.ZeRO, sp)
}

// Config is the job: a model on a number of GPUs of a cluster, with a
// global batch, on a software stack.
type Config struct {
	Model       Model
	Cluster     Cluster
	Stack       Stack
	GPUs        int
	GlobalBatch int     // sequences per iteration
	Tokens      float64 // tokens to train on; 0 uses the model's budget
}

// Validate checks the job itself, before any layout.
func (c Config) Validate() error {
	if err := c.Model.Validate(); err != nil {
		return err
	}
	if c.GPUs <= 0 {
		return fmt.Errorf("--gpus must be positive, got %d", c.GPUs)
	}
	if c.GlobalBatch <= 0 {
		return fmt.Errorf("--global-batch must be positive, got %d", c.GlobalBatch)
	}
	if c.Tokens < 0 {
		return fmt.Errorf("--tokens must not be negative, got %g", c.Tokens)
	}
	if c.Cluster.GPUsPerNode <= 0 || c.Cluster.NVLinkGPUs <= 0 || c.Cluster.NICGBps <= 0 {
		return fmt.Errorf("cluster %q: incomplete node description", c.Cluster.Source)
	}
	return nil
}

// InfeasibleError says why a layout cannot run.
type InfeasibleError struct {
	Layout  Layout
	Reasons []string
}

func (e *InfeasibleError) Error() string {
	return fmt.Sprintf("layout tp=%d pp=%d dp=%d is infeasible: %s", e.Layout.TP, e.Layout.PP, e.Layout.DP,
		strings.Join(e.Reasons, "; "))
}

// stageLayers is the number of layers on the largest pipeline stage: with
// uneven stages (pp not dividing the layers) some stages get one more.
func stageLayers(layers, pp int) int { return (layers + pp - 1) / pp }

// check lists what makes a layout impossible apart from memory: the
// divisibility rules of Megatron-LM and DeepSpeed and the NVLink domain.
func (c Config) check(l Layout) []string {
	var why []string
	m := c.Model
	if l.TP < 1 || l.PP < 1 || l.DP < 1 || l.VP < 1 || l.Microbatch < 1 {
		return []string{"tp, pp, dp, vp and microbatch must be at least 1"}
	}
	if l.TP*l.PP*l.DP != c.GPUs {
		why = append(why, fmt.Sprintf("tp*pp*dp = %d*%d*%d = %d, not the %d GPUs", l.TP, l.PP, l.DP, l.TP*l.PP*l.DP, c.GPUs))
	}
	if l.TP > c.Cluster.NVLinkGPUs {
		why = append(why, fmt.Sprintf("tp=%d exceeds the NVLink domain of %d GPUs", l.TP, c.Cluster.NVLinkGPUs))
	} else if c.Cluster.NVLinkGPUs%l.TP != 0 {
		why = append(why, fmt.Sprintf("tp=%d does not divide the NVLink domain of %d GPUs", l.TP, c.Cluster.NVLinkGPUs))
	}
	if m.Heads%l.TP != 0 {
		why = append(why, fmt.Sprintf("tp=%d does not divide the %d attention heads", l.TP, m.Heads))
	}
	if m.KVHeads%l.TP != 0 && m.Heads%l.TP == 0 {
		why = append(why, fmt.Sprintf("tp=%d does not divide the %d key/value heads", l.TP, m.KVHeads))
	}
	if m.FFN%l.TP != 0 {
		why = append(why, fmt.Sprintf("tp=%d does not divide the MLP size %d", l.TP, m.FFN))
	}
	switch {
	case l.PP > m.Layers:
		why = append(why, fmt.Sprintf("pp=%d exceeds the %d layers", l.PP, m.Layers))
	case m.Layers%l.PP != 0 && !c.Stack.UnevenStages:
		why = append(why, fmt.Sprintf("pp=%d does not divide the %d layers (the %s stack needs equal stages)", l.PP, m.Layers, c.Stack.Name))
	case stageLayers(m.Layers, l.PP)%l.VP != 0:
		why = append(why, fmt.Sprintf("vp=%d does not divide the %d layers per stage", l.VP, stageLayers(m.Layers, l.PP)))
	}
	if c.GlobalBatch%(l.DP*l.Microbatch) != 0 {
		why = append(why, fmt.Sprintf("global batch %d is not a multiple of dp*microbatch = %d*%d", c.GlobalBatch, l.DP, l.Microbatch))
	} else if l.VP > 1 {
		mb := c.GlobalBatch / (l.DP * l.Microbatch)
		if l.PP == 1 {
			why = append(why, "the interleaved schedule (vp>1) needs pp>1")
		} else if mb%l.PP != 0 {
			why = append(why, fmt.Sprintf("the interleaved schedule needs the %d microbatches per replica to be a multiple of pp=%d", mb, l.PP))
		}
	}
	if l.SeqParallel && l.TP == 1 {
		why = append(why, "sequence parallelism needs tp>1")
	}
	if l.SeqParallel && !c.Stack.SequenceParallel {
		why = append(why, fmt.Sprintf("the %s stack has no sequence parallelism", c.Stack.Name))
	}
	if l.ZeRO < 0 || l.ZeRO > 3 {
		why = append(why, fmt.Sprintf("zero=%d: want 0 to 3", l.ZeRO))
	} else if l.ZeRO >= 2 && l.PP > 1 {
		why = append(why, fmt.Sprintf("zero=%d shards gradients every microbatch and does not combine with pipeline parallelism (DeepSpeed allows ZeRO-0/1 with pp>1)", l.ZeRO))
	}
	return why
}
