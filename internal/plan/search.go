package plan

import (
	"errors"
	"fmt"
	"sort"
)

// Fixed pins parts of the layout; zero (or Any) leaves a part to the search.
type Fixed struct {
	TP, PP, DP, VP, Microbatch int
	Recompute                  Recompute // RecomputeAny to search
	SeqParallel                int       // 0 search, 1 on, -1 off
	ZeRO                       int       // ZeROAny to search
}

// Search sentinels.
const (
	RecomputeAny Recompute = -1
	ZeROAny                = -1
)

// AnyLayout leaves every part to the search.
func AnyLayout() Fixed { return Fixed{Recompute: RecomputeAny, ZeRO: ZeROAny} }

// Search evaluates every layout that satisfies fix and the rules, and
// returns the top fastest that fit in memory, fastest first (ties: less
// memory first). It returns an error saying why when none fits.
func Search(c Config, fix Fixed, top int) ([]Result, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if top < 1 {
		top = 1
	}
	e := newEstimator(c)
	m := c.Model
	var best []Result
	var leanest *Result // the smallest memory among layouts that broke no rule
	evaluated := 0
	for _, tp := range choices(fix.TP, divisors(c.Cluster.NVLinkGPUs)) {
		if c.GPUs%tp != 0 || m.Heads%tp != 0 || m.KVHeads%tp != 0 || m.FFN%tp != 0 {
			continue
		}
		for _, pp := range choices(fix.PP, e.stageCounts(c.GPUs/tp)) {
			if c.GPUs%(tp*pp) != 0 {
				continue
			}
			dp := c.GPUs / (tp * pp)
			if (fix.DP > 0 && dp != fix.DP) || c.GlobalBatch%dp != 0 {
				continue
			}
			for _, mb := range choices(fix.Microbatch, divisors(c.GlobalBatch/dp)) {
				nmb := c.GlobalBatch / dp / mb
				for _, vp := range choices(fix.VP, divisors(stageLayers(m.Layers, pp))) {
					if vp > 1 && (pp == 1 || nmb%pp != 0) {
						continue
					}
					for _, rc := range e.recomputeChoices(fix.Recompute) {
						for _, sp := range e.spChoices(fix.SeqParallel, tp) {
							for _, z := range zeroChoices(fix.ZeRO, pp) {
								l := Layout{TP: tp, PP: pp, DP: dp, VP: vp, Microbatch: mb, Recompute: rc, SeqParallel: sp, ZeRO: z}
								r := e.evaluate(l)
								evaluated++
								if !r.Fits {
									if leanest == nil || r.MemoryGB < leanest.MemoryGB {
										rr := r
										leanest = &rr
									}
									continue
								}
								best = insertTop(best, r, top)
							}
						}
					}
				}
			}
		}
	}
	if len(best) > 0 {
		return best, nil
	}
	return nil, e.explain(fix, evaluated, leanest)
}

// ErrNoLayout is wrapped by Search's error when nothing fits or nothing
// satisfies the rules.
var ErrNoLayout = errors.New("no feasible layout")

// explain says why a search found nothing: the rules a pinned layout
// breaks, or the memory of the leanest layout.
func (e *estimator) explain(fix Fixed, evaluated int, leanest *Result) error {
	c := e.c
	if leanest != nil {
		return fmt.Errorf("%w: %s; the leanest layout (%s) %s", ErrNoLayout, e.scope(fix), leanest.Layout, e.memoryReason(*leanest))
	}
	// Nothing passed the rules: check the pinned parts to name the rule.
	l := Layout{TP: fix.TP, PP: fix.PP, DP: fix.DP, VP: max(fix.VP, 1), Microbatch: max(fix.Microbatch, 1), ZeRO: max(fix.ZeRO, 0)}
	if fix.Recompute >= 0 {
		l.Recompute = fix.Recompute
	}
	l.SeqParallel = fix.SeqParallel > 0
	if l.TP == 0 {
		l.TP = 1
	}
	if l.PP == 0 {
		l.PP = 1
	}
	if l.DP == 0 {
		l.DP = max(1, c.GPUs/(l.TP*l.PP))
	}
	if why := c.check(l); len(why) > 0 {
		return &InfeasibleError{Layout: l, Reasons: why}
	}
	return fmt.Errorf("%w: %s; no combination of tp (dividing the %d heads and the NVLink domain of %d), pp (dividing the %d layers) and dp multiplies to %d GPUs with dp dividing the global batch %d",
		ErrNoLayout, e.scope(fix), c.Model.Heads, c.Cluster.NVLinkGPUs, c.Model.Layers, c.GPUs, c.GlobalBatch)
}

func (e *estimator) scope(fix Fixed) string {
	s := fmt.Sprintf("%s on %d x %s", e.c.Model.Name, e.c.GPUs, e.c.Cluster.GPU.Name)
	if fix.TP > 0 || fix.PP > 0 || fix.DP > 0 {
		s += fmt.Sprintf(" with tp=%s pp=%s dp=%s", pinned(fix.TP), pinned(fix.PP), pinned(fix.DP))
	}
	return s
}

func pinned(v int) string {
	if v == 0 {
		return "any"
	}
	return fmt.Sprint(v)
}

func (e *estimator) recomputeChoices(fixed Recompute) []Recompute {
	if fixed >= 0 {
		return []Recompute{fixed}
	}
	if e.c.Stack.FlashAttention {
		// Selective recomputation is a no-op with fused attention.
		return []Recompute{RecomputeNone, RecomputeFull}
	}
	return []Recompute{RecomputeNone, RecomputeSelective, RecomputeFull}
}

func (e *estimator) spChoices(fixed, tp int) []bool {
	switch {
	case fixed > 0:
		return []bool{true}
	case fixed < 0 || tp == 1 || !e.c.Stack.SequenceParallel:
		return []bool{false}
	}
	return []bool{false, true}
}

func zeroChoices(fixed, pp int) []int {
	if fixed >= 2 && pp > 1 {
		return nil // explain names the rule
	}
	if fixed >= 0 {
		return []int{fixed}
	}
	if pp > 1 {
		return []int{0, 1}
	}
	return []int{0, 1, 2, 3}
}

// choices is the pinned value when it is one of the allowed values (none
// when it is not: explain then names the rule), or all of them.
func choices(fixed int, all []int) []int {
	if fixed > 0 {
		for _, v := range all {
			if v == fixed {
				return []int{fixed}
			}
		}
		return nil
	}
	return all
}

// stageCounts are the pipeline depths to try: divisors of the layers, and
// with a stack that allows uneven stages any depth up to the layer count
// that divides the GPUs left after tensor parallelism.
func (e *estimator) stageCounts(perTP int) []int {
	l := e.c.Model.Layers
	if !e.c.Stack.UnevenStages {
		return divisors(l)
	}
	var out []int
	for _, d := range divisors(perTP) {
		if d <= l {
			out = append(out, d)
		}
	}
	return out
}

// divisors of n in increasing order.
func divisors(n int) []int {
	var small, large []int
	for d := 1; d*d <= n; d++ {
		if n%d == 0 {
			small = append(small, d)
			if d*d != n {
				large = append(large, n/d)
			}
		}
	}
	for i := len(large) - 1; i >= 0; i-- {
		small = append(small, large[i])
	}
	return small
}

// less orders results: faster first, then less memory, then the smaller
// layout, so that the ranking is deterministic.
func less(a, b *Result) bool {
	if a.IterSec != b.IterSec {
		return a.IterSec < b.IterSec
	}
	if a.MemoryGB != b.MemoryGB {
		return a.MemoryGB < b.MemoryGB
	}
	ka := [...]int{a.TP, a.PP, a.DP, a.VP, a.Microbatch, int(a.Recompute), b2i(a.SeqParallel), a.ZeRO}
	kb := [...]int{b.TP, b.PP, b.DP, b.VP, b.Microbatch, int(b.Recompute), b2i(b.SeqParallel), b.ZeRO}
	for i := range ka {
		if ka[i] != kb[i] {
			return ka[i] < kb[i]
		}
	}
	return false
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// insertTop keeps the k best results in order.
func insertTop(best []Result, r Result, k int) []Result {
	if len(best) == k && !less(&r, &best[k-1]) {
		return best
	}
	i := sort.Search(len(best), func(i int) bool { return less(&r, &best[i]) })
	if len(best) < k {
		best = append(best, Result{})
	}
	copy(best[i+1:], best[i:len(best)-1])
	best[i] = r
	return best
}
