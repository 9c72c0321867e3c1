package workload

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Mix names a synthetic workload.
type Mix string

const (
	// MixGavel: every job draws its duration as in Gavel (Narayanan et al.,
	// OSDI'20): 60*10^U(1.5,3) s with probability 0.8, else 60*10^U(3,4) s,
	// and its GPU count from Dist.
	MixGavel Mix = "gavel"
	// MixLLM: an LLM-era fleet. A few pre-training gangs of 1,024 to 16,384
	// GPUs (whole nodes, priority 100, checkpointing every 30 minutes) and fine-tuning
	// jobs of 8 to 128 GPUs beside many small Gavel-like jobs. Shares of
	// the offered GPU time: LLMShares.
	MixLLM Mix = "llm"
)

// ParseMix checks a mix name.
func ParseMix(s string) (Mix, error) {
	switch Mix(s) {
	case MixGavel, MixLLM:
		return Mix(s), nil
	}
	return "", fmt.Errorf("unknown synthetic mix %q (want gavel or llm)", s)
}

// Dist is a discrete distribution of GPU counts.
type Dist struct {
	Values  []int
	Weights []float64 // same length, positive; need not sum to 1
}

// GavelGPUs is the GPU-count distribution of Gavel's trace generator: 1 GPU
// with probability 0.7, 2 with 0.1, 4 with 0.15, 8 with 0.05.
var GavelGPUs = Dist{Values: []int{1, 2, 4, 8}, Weights: []float64{0.7, 0.1, 0.15, 0.05}}

// ParseDist reads "1:0.7,2:0.1,4:0.15,8:0.05" (GPUs:weight, comma separated).
func ParseDist(s string) (Dist, error) {
	var d Dist
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		v, w, ok := strings.Cut(part, ":")
		if !ok {
			return Dist{}, fmt.Errorf("gpu distribution %q: %q is not GPUS:WEIGHT", s, part)
		}
		g, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || g < 1 || g > maxGPUs {
			return Dist{}, fmt.Errorf("gpu distribution %q: %q is not a GPU count", s, v)
		}
		p, err := strconv.ParseFloat(strings.TrimSpace(w), 64)
		if err != nil || !(p > 0) || math.IsInf(p, 0) {
			return Dist{}, fmt.Errorf("gpu distribution %q: weight %q must be a positive number", s, w)
		}
		if slices.Contains(d.Values, g) {
			return Dist{}, fmt.Errorf("gpu distribution %q: %d GPUs listed twice", s, g)
		}
		d.Values = append(d.Values, g)
		d.Weights = append(d.Weights, p)
	}
	if len(d.Values) == 0 {
		return Dist{}, fmt.Errorf("gpu distribution %q is empty", s)
	}
	return d, nil
}

func (d Dist) String() string {
	parts := make([]string, len(d.Values))
	for i := range d.Values {
		parts[i] = fmt.Sprintf("%d:%g", d.Values[i], d.Weights[i])
	}
	return strings.Join(parts, ",")
}

func (d Dist) total() float64 {
	s := 0.0
	for _, w := range d.Weights {
		s += w
	}
	return s
}

// Mean is the expected GPU count.
func (d Dist) Mean() float64 {
	s := 0.0
	for i, v := range d.Values {
		s += float64(v) * d.Weights[i]
	}
	return s / d.total()
}

func (d Dist) draw(r *rand.Rand) int {
	x := r.Float64() * d.total()
	for i, w := range d.Weights {
		if x < w {
			return d.Values[i]
		}
		x -= w
	}
	return d.Values[len(d.Values)-1]
}

// LLMShares are the shares of offered GPU time of the LLM mix's classes.
var LLMShares = struct{ Pretrain, Finetune, Small float64 }{0.5, 0.2, 0.3}

// Sizes of pre-training gangs (drawn uniformly among those that fit
// MaxGPUs) and of fine-tuning jobs.
var (
	pretrainSizes = []int{1024, 2048, 4096, 8192, 16384}
	finetuneSizes = []int{8, 16, 32, 64, 128}
)

// Synthetic describes a generated workload.
type Synthetic struct {
	Mix  Mix
	Jobs int
	// Rate is the mean arrival rate in jobs per hour (Poisson arrivals).
	Rate float64
	// GPUs is the GPU-count distribution of the small jobs (default
	// GavelGPUs).
	GPUs Dist
	// TenantCount spreads jobs uniformly over that many tenants team-00, ...
	// (default 8); the LLM mix's pre-training gangs belong to "pretrain".
	TenantCount int
	// MaxGPUs, when set, bounds the pre-training gangs to the fleet.
	MaxGPUs int
	Seed    uint64
}

func (s *Synthetic) withDefaults() Synthetic {
	c := *s
	if c.Mix == "" {
		c.Mix = MixGavel
	}
	if len(c.GPUs.Values) == 0 {
		c.GPUs = GavelGPUs
	}
	if c.TenantCount <= 0 {
		c.TenantCount = 8
	}
	return c
}

// Validate checks the description.
func (s *Synthetic) Validate() error {
	c := s.withDefaults()
	if _, err := ParseMix(string(c.Mix)); err != nil {
		return err
	}
	if c.Jobs < 1 {
		return fmt.Errorf("synthetic workload: jobs must be at least 1, got %d", c.Jobs)
	}
	if c.Mix == MixLLM && len(c.pretrainSizes()) == 0 {
		return fmt.Errorf("synthetic workload: the llm mix needs a fleet of at least %d GPUs for its pre-training gangs", pretrainSizes[0])
	}
	if !(c.Rate > 0) || math.IsInf(c.Rate, 0) {
		return fmt.Errorf("synthetic workload: rate must be a positive number of jobs per hour, got %v", c.Rate)
	}
	return nil
}

func (s *Synthetic) pretrainSizes() []int {
	var out []int
	for _, g := range pretrainSizes {
		if s.MaxGPUs <= 0 || g <= s.MaxGPUs {
			out = append(out, g)
		}
	}
	return out
}

// meanPow10 is E[10^U(a,b)].
func meanPow10(a, b float64) float64 {
	return (math.Pow(10, b) - math.Pow(10, a)) / ((b - a) * math.Ln10)
}

// gavelMeanSeconds is the mean of Gavel's duration distribution.
func gavelMeanSeconds() float64 {
	return 60 * (0.8*meanPow10(1.5, 3) + 0.2*meanPow10(3, 4))
}

func meanInts(v []int) float64 {
	s := 0
	for _, x := range v {
		s += x
	}
	return float64(s) / float64(len(v))
}

// class shapes of the LLM mix.
const (
	pretrainLo, pretrainHi = 3.0, 4.0 // 60*10^U(3,4) s: 17 h to 7 days
	finetuneLo, finetuneHi = 2.0, 3.5 // 60*10^U(2,3.5) s: 1.7 h to 2.2 days
)

// classProbs returns the probability that an arrival is a pre-training gang
// and a fine-tuning job, so that the classes get LLMShares of the GPU time.
func (s *Synthetic) classProbs() (pre, ft float64) {
	if s.Mix != MixLLM {
		return 0, 0
	}
	mPre := meanInts(s.pretrainSizes()) * 60 * meanPow10(pretrainLo, pretrainHi)
	mFt := meanInts(finetuneSizes) * 60 * meanPow10(finetuneLo, finetuneHi)
	mSmall := s.GPUs.Mean() * gavelMeanSeconds()
	wPre, wFt, wSmall := LLMShares.Pretrain/mPre, LLMShares.Finetune/mFt, LLMShares.Small/mSmall
	sum := wPre + wFt + wSmall
	return wPre / sum, wFt / sum
}

// MeanGPUSeconds is the expected GPU time of one job.
func (s *Synthetic) MeanGPUSeconds() float64 {
	c := s.withDefaults()
	small := c.GPUs.Mean() * gavelMeanSeconds()
	if c.Mix != MixLLM {
		return small
	}
	pre, ft := c.classProbs()
	return pre*meanInts(c.pretrainSizes())*60*meanPow10(pretrainLo, pretrainHi) +
		ft*meanInts(finetuneSizes)*60*meanPow10(finetuneLo, finetuneHi) +
		(1-pre-ft)*small
}

// RateForLoad is the arrival rate (jobs per hour) that offers load (0..1
// and beyond) of a fleet of gpus GPUs.
func (s *Synthetic) RateForLoad(load float64, gpus int) float64 {
	return load * float64(gpus) * 3600 / s.MeanGPUSeconds()
}

// Source returns a fresh stream of the workload; the same seed gives the
// same jobs.
func (s *Synthetic) Source() Source {
	c := s.withDefaults()
	g := &generator{cfg: c, r: rand.New(rand.NewPCG(c.Seed, 0x5eed_0f_9c10d))}
	g.pre, g.ft = c.classProbs()
	g.sizes = c.pretrainSizes()
	g.tenants = make([]string, c.TenantCount)
	for i := range g.tenants {
		g.tenants[i] = fmt.Sprintf("team-%02d", i)
	}
	return g
}

type generator struct {
	cfg     Synthetic
	r       *rand.Rand
	n       int
	now     float64 // seconds
	pre, ft float64
	sizes   []int
	tenants []string
}

func (g *generator) Len() int { return g.cfg.Jobs }

func (g *generator) uniformPow10(lo, hi float64) float64 {
	return math.Pow(10, lo+(hi-lo)*g.r.Float64())
}

// gavelSeconds draws a duration from Gavel's distribution.
func (g *generator) gavelSeconds() float64 {
	if g.r.Float64() < 0.8 {
		return 60 * g.uniformPow10(1.5, 3)
	}
	return 60 * g.uniformPow10(3, 4)
}

func (g *generator) Next() (Job, bool) {
	if g.n >= g.cfg.Jobs {
		return Job{}, false
	}
	if g.n > 0 {
		g.now += g.r.ExpFloat64() * 3600 / g.cfg.Rate
	}
	j := Job{ID: fmt.Sprintf("s%07d", g.n), Submit: time.Duration(g.now * 1e9), Preemptible: true}
	g.n++
	var secs float64
	switch x := g.r.Float64(); {
	case x < g.pre:
		j.Tenant = "pretrain"
		j.GPUs = g.sizes[g.r.IntN(len(g.sizes))]
		j.Priority = 100
		j.Checkpoint = 30 * time.Minute
		secs = 60 * g.uniformPow10(pretrainLo, pretrainHi)
	case x < g.pre+g.ft:
		j.Tenant = g.tenants[g.r.IntN(len(g.tenants))]
		j.GPUs = finetuneSizes[g.r.IntN(len(finetuneSizes))]
		j.Priority = 10
		secs = 60 * g.uniformPow10(finetuneLo, finetuneHi)
	default:
		j.Tenant = g.tenants[g.r.IntN(len(g.tenants))]
		j.GPUs = g.cfg.GPUs.draw(g.r)
		secs = g.gavelSeconds()
	}
	j.Duration = max(time.Duration(secs*1e9), time.Second)
	return j, true
}

// Tenants lists the tenants the workload's jobs belong to, sorted.
func (s *Synthetic) Tenants() []string {
	c := s.withDefaults()
	out := make([]string, 0, c.TenantCount+1)
	if c.Mix == MixLLM {
		out = append(out, "pretrain")
	}
	for i := range c.TenantCount {
		out = append(out, fmt.Sprintf("team-%02d", i))
	}
	slices.Sort(out)
	return out
}

// Epoch is offset 0 of synthetic workloads.
var Epoch = csvEpoch
