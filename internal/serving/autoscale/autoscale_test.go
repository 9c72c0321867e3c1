package autoscale

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// step is one control tick: an observation of the last second, then a
// recommendation.
type step struct {
	at    time.Duration // since t0
	conc  float64
	queue time.Duration
}

// run feeds ticks of one second and applies each decision, as the
// controller does; it returns the count after every tick.
func run(t *testing.T, cfg Config, start int, steps []step) []int {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cur := start
	var out []int
	for _, s := range steps {
		now := t0.Add(s.at)
		a.Observe(Observation{Time: now, Interval: time.Second, Concurrency: s.conc, QueueTime: s.queue, Requests: 10})
		cur = a.Recommend(now, cur).Replicas
		out = append(out, cur)
	}
	return out
}

// flat makes n one-second ticks at a constant load, starting at from.
func flat(from, n int, conc float64) []step {
	s := make([]step, n)
	for i := range s {
		s[i] = step{at: time.Duration(from+i) * time.Second, conc: conc}
	}
	return s
}

func TestRecommend(t *testing.T) {
	base := Config{Min: 1, Max: 8, TargetInflight: 4, MetricWindow: time.Second, ScaleDownWindow: 5 * time.Second}
	tests := []struct {
		name  string
		cfg   Config
		start int
		steps []step
		want  []int
	}{
		{
			name: "scales up at once to ceil(load/target)", cfg: base, start: 1,
			steps: flat(1, 2, 13), want: []int{4, 4},
		},
		{
			name: "holds inside the tolerance band", cfg: base, start: 4,
			steps: flat(1, 3, 16.5), want: []int{4, 4, 4},
		},
		{
			name: "leaves the tolerance band upwards", cfg: base, start: 4,
			steps: flat(1, 1, 17.8), want: []int{5},
		},
		{
			name: "bounded by max", cfg: base, start: 1,
			steps: flat(1, 1, 100), want: []int{8},
		},
		{
			name: "scale-down waits for the stabilisation window", cfg: base, start: 1,
			steps: append(flat(1, 2, 16), flat(3, 7, 2)...),
			// The last recommendation of 4 (at 2s) leaves the 5s window
			// at 7s.
			want: []int{4, 4, 4, 4, 4, 4, 1, 1, 1},
		},
		{
			name: "idle falls to min", cfg: base, start: 3,
			steps: flat(1, 7, 0), want: []int{3, 3, 3, 3, 3, 1, 1},
		},
		{
			name: "min zero scales to zero and back on queued demand",
			cfg:  Config{Min: 0, Max: 4, TargetInflight: 1, MetricWindow: time.Second, ScaleDownWindow: 2 * time.Second}, start: 1,
			steps: append(flat(1, 3, 0), step{at: 4 * time.Second, conc: 0.5}),
			want:  []int{1, 1, 0, 1},
		},
		{
			name: "queue time above target adds one replica", cfg: func() Config { c := base; c.TargetQueueTime = 100 * time.Millisecond; return c }(), start: 2,
			steps: []step{{at: time.Second, conc: 8, queue: 500 * time.Millisecond}, {at: 2 * time.Second, conc: 8, queue: 600 * time.Millisecond}},
			want:  []int{3, 4},
		},
		{
			name: "scale-up window ignores a spike", cfg: func() Config { c := base; c.ScaleUpWindow = 3 * time.Second; return c }(), start: 1,
			steps: append(append(flat(1, 2, 2), step{at: 3 * time.Second, conc: 30}), flat(4, 1, 2)...),
			want:  []int{1, 1, 1, 1},
		},
		{
			name: "scale-up window follows sustained load", cfg: func() Config { c := base; c.ScaleUpWindow = 2 * time.Second; return c }(), start: 1,
			steps: flat(1, 4, 12), want: []int{1, 1, 3, 3},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := run(t, tc.cfg, tc.start, tc.steps)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("counts (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMetricWindowAveragesByInterval(t *testing.T) {
	a, err := New(Config{Min: 1, Max: 10, TargetInflight: 1, MetricWindow: 6 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Five quiet seconds and one second at 30: a mean of 5.
	for i := 1; i <= 5; i++ {
		a.Observe(Observation{Time: t0.Add(time.Duration(i) * time.Second), Interval: time.Second})
	}
	a.Observe(Observation{Time: t0.Add(6 * time.Second), Interval: time.Second, Concurrency: 30})
	d := a.Recommend(t0.Add(6*time.Second), 1)
	if d.Load != 5 || d.Replicas != 5 {
		t.Fatalf("load %v replicas %d, want 5 and 5 (%s)", d.Load, d.Replicas, d.Reason)
	}
	// A 2s observation counts twice as much as a 1s one.
	b, _ := New(Config{Min: 1, Max: 10, TargetInflight: 1, MetricWindow: 10 * time.Second})
	b.Observe(Observation{Time: t0.Add(2 * time.Second), Interval: 2 * time.Second, Concurrency: 9})
	b.Observe(Observation{Time: t0.Add(3 * time.Second), Interval: time.Second, Concurrency: 0})
	if d := b.Recommend(t0.Add(3*time.Second), 1); d.Load != 6 {
		t.Fatalf("load %v, want 6", d.Load)
	}
}

func TestHoldsWithoutObservations(t *testing.T) {
	a, _ := New(Config{Min: 2, Max: 5, TargetInflight: 4, MetricWindow: time.Second})
	a.Observe(Observation{Time: t0, Interval: time.Second, Concurrency: 40})
	d := a.Recommend(t0.Add(time.Minute), 3)
	if d.Replicas != 3 || !strings.Contains(d.Reason, "no observations") {
		t.Fatalf("got %d (%s), want to hold 3", d.Replicas, d.Reason)
	}
	if d := a.Recommend(t0.Add(time.Minute), 9); d.Replicas != 5 {
		t.Fatalf("got %d, want max 5", d.Replicas)
	}
}

func TestObservationsOutOfOrderIgnored(t *testing.T) {
	a, _ := New(Config{Min: 1, Max: 10, TargetInflight: 1, MetricWindow: 10 * time.Second})
	a.Observe(Observation{Time: t0.Add(5 * time.Second), Interval: time.Second, Concurrency: 2})
	a.Observe(Observation{Time: t0.Add(4 * time.Second), Interval: time.Second, Concurrency: 100})
	a.Observe(Observation{Time: t0.Add(6 * time.Second), Interval: 0, Concurrency: 100})
	if d := a.Recommend(t0.Add(6*time.Second), 1); d.Load != 2 {
		t.Fatalf("load %v, want 2", d.Load)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{Min: -1, Max: 1, TargetInflight: 1}, "min:"},
		{Config{Min: 3, Max: 2, TargetInflight: 1}, "max:"},
		{Config{Min: 0, Max: 0, TargetInflight: 1}, "max:"},
		{Config{Min: 1, Max: 2}, "targetInflight:"},
		{Config{Min: 1, Max: 2, TargetInflight: 1, TargetQueueTime: -1}, "targetQueueTime:"},
		{Config{Min: 1, Max: 2, TargetInflight: 1, Tolerance: 1}, "tolerance:"},
		{Config{Min: 1, Max: 2, TargetInflight: 1, ScaleUpWindow: -time.Second}, "windows"},
	}
	for _, tc := range tests {
		_, err := New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one naming %q", tc.cfg, err, tc.want)
		}
	}
	a, err := New(Config{Min: 1, Max: 2, TargetInflight: 1})
	if err != nil {
		t.Fatal(err)
	}
	if c := a.Config(); c.MetricWindow != DefaultMetricWindow || c.ScaleDownWindow != DefaultScaleDownWindow || c.Tolerance != DefaultTolerance {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if err := a.SetConfig(Config{Min: 5, Max: 1, TargetInflight: 1}); err == nil {
		t.Fatal("SetConfig accepted min > max")
	}
}

// Random load: the count stays in bounds, never drops while a recent
// recommendation was higher, and the same inputs give the same outputs.
func TestRandomLoadInvariants(t *testing.T) {
	cfg := Config{Min: 1, Max: 16, TargetInflight: 3, MetricWindow: 3 * time.Second, ScaleDownWindow: 10 * time.Second, TargetQueueTime: 50 * time.Millisecond}
	r := rand.New(rand.NewPCG(1, 2))
	var steps []step
	for i := 1; i <= 2000; i++ {
		steps = append(steps, step{at: time.Duration(i) * time.Second, conc: r.Float64() * 60, queue: time.Duration(r.IntN(100)) * time.Millisecond})
	}
	a := run(t, cfg, 1, steps)
	b := run(t, cfg, 1, steps)
	if diff := cmp.Diff(a, b); diff != "" {
		t.Fatalf("not deterministic:\n%s", diff)
	}
	as, _ := New(cfg)
	cur := 1
	for i, s := range steps {
		now := t0.Add(s.at)
		as.Observe(Observation{Time: now, Interval: time.Second, Concurrency: s.conc, QueueTime: s.queue, Requests: 1})
		d := as.Recommend(now, cur)
		if d.Replicas < cfg.Min || d.Replicas > cfg.Max {
			t.Fatalf("step %d: %d out of bounds", i, d.Replicas)
		}
		if d.Replicas < cur {
			for _, r := range as.recs {
				if now.Sub(r.t) < cfg.ScaleDownWindow && min(r.n, cfg.Max) > d.Replicas {
					t.Fatalf("step %d: scaled down to %d while %d was recommended %v ago", i, d.Replicas, r.n, now.Sub(r.t))
				}
			}
		}
		cur = d.Replicas
	}
}
