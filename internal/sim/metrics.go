package sim

import (
	"math"
	"slices"
	"time"
)

// percentile returns the p-th percentile (0..100) of sorted samples by the
// nearest-rank method, and 0 for no samples.
func percentile(sorted []float32, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return float64(sorted[rank-1])
}

// mean is the average of samples, summed in float64.
func mean(s []float32) float64 {
	if len(s) == 0 {
		return 0
	}
	sum := 0.0
	for _, v := range s {
		sum += float64(v)
	}
	return sum / float64(len(s))
}

// Summary describes a distribution of durations, in seconds.
type Summary struct {
	Mean float64 `json:"mean_s"`
	P50  float64 `json:"p50_s"`
	P90  float64 `json:"p90_s"`
	P99  float64 `json:"p99_s"`
	Max  float64 `json:"max_s"`
}

// summarize sorts samples in place and describes them.
func summarize(s []float32) Summary {
	slices.Sort(s)
	if len(s) == 0 {
		return Summary{}
	}
	return Summary{Mean: mean(s), P50: percentile(s, 50), P90: percentile(s, 90),
		P99: percentile(s, 99), Max: float64(s[len(s)-1])}
}

// jain is Jain's fairness index of xs: (sum x)^2 / (n * sum x^2), 1 when
// all are equal, 1/n when one gets everything. It is 1 for no values.
func jain(xs []float64) float64 {
	var s, s2 float64
	for _, x := range xs {
		s += x
		s2 += x * x
	}
	if s2 == 0 {
		return 1
	}
	return s * s / (float64(len(xs)) * s2)
}

// series is the time-weighted average of a piecewise-constant quantity
// (allocated GPUs, waiting jobs) over buckets of equal width. When the run
// outgrows maxBuckets, neighbouring buckets merge and the width doubles, so
// memory stays bounded however long the simulated span.
type series struct {
	width   time.Duration
	sums    []float64 // value x seconds per bucket
	value   float64   // current value
	since   time.Duration
	started bool
}

const (
	maxBuckets   = 2048
	initialWidth = time.Minute
)

// set records that the quantity is v from time t on. Times must not go
// backwards.
func (s *series) set(t time.Duration, v float64) {
	if !s.started {
		s.started, s.width, s.since, s.value = true, initialWidth, t, v
		return
	}
	s.advance(t)
	s.value = v
}

// advance integrates the current value from s.since to t.
func (s *series) advance(t time.Duration) {
	for s.since < t {
		b := int(s.since / s.width)
		for b >= maxBuckets {
			s.compact()
			b = int(s.since / s.width)
		}
		for len(s.sums) <= b {
			s.sums = append(s.sums, 0)
		}
		end := min(time.Duration(b+1)*s.width, t)
		s.sums[b] += s.value * (end - s.since).Seconds()
		s.since = end
	}
}

func (s *series) compact() {
	n := (len(s.sums) + 1) / 2
	for i := range n {
		v := s.sums[2*i]
		if 2*i+1 < len(s.sums) {
			v += s.sums[2*i+1]
		}
		s.sums[i] = v
	}
	s.sums = s.sums[:n]
	s.width *= 2
}

// Point is one sample of a time series.
type Point struct {
	T time.Duration // start of the bucket
	V float64       // average over the bucket
}

// points returns the bucket averages up to end.
func (s *series) points(end time.Duration) []Point {
	if !s.started {
		return nil
	}
	s.advance(end)
	out := make([]Point, 0, len(s.sums))
	for i, sum := range s.sums {
		lo := time.Duration(i) * s.width
		hi := min(lo+s.width, end)
		if hi <= lo {
			break
		}
		out = append(out, Point{T: lo, V: sum / (hi - lo).Seconds()})
	}
	return out
}
