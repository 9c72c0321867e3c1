// Package autoscale decides how many replicas an inference deployment needs
// from what its router observed. It is pure: observations and the time come
// in, a replica count comes out; no clock, no goroutines, no I/O, so a
// simulation and the server make the same decision from the same inputs.
//
// The load signal is concurrency: the time-average of requests in flight
// plus requests waiting in the router's queue. A replica of an LLM server
// has a batch size it serves well, so "in-flight requests per replica" is
// the closest thing to utilisation the router can see without asking the
// model server. The raw recommendation is ceil(load / target), kept at the
// current count inside a tolerance band, raised by one while requests wait
// in the queue longer than the target queue time, and stabilised the way
// the Kubernetes HPA does it: scale up to the smallest recommendation of
// the scale-up window (0: at once), scale down to the largest of the
// scale-down window, so one quiet second never gives back a replica that
// took minutes to load.
package autoscale

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Config tunes one deployment's autoscaler.
type Config struct {
	// Min and Max bound the count; with no load the count falls to Min.
	Min, Max int
	// TargetInflight is the concurrency per replica to aim for (requests in
	// flight plus queued ones).
	TargetInflight float64
	// TargetQueueTime adds a replica while requests wait in the router's
	// queue longer than this on average; 0 turns it off.
	TargetQueueTime time.Duration
	// MetricWindow is how far back observations are averaged (default 6s).
	MetricWindow time.Duration
	// ScaleUpWindow and ScaleDownWindow are the stabilisation windows
	// (defaults 0 and 5m).
	ScaleUpWindow, ScaleDownWindow time.Duration
	// Tolerance keeps the count while load/(count*target) is within 1±t
	// (default 0.1).
	Tolerance float64
}

// Defaults.
const (
	DefaultMetricWindow    = 6 * time.Second
	DefaultScaleDownWindow = 5 * time.Minute
	DefaultTolerance       = 0.1
)

func (c *Config) defaults() {
	if c.MetricWindow == 0 {
		c.MetricWindow = DefaultMetricWindow
	}
	if c.ScaleDownWindow == 0 {
		c.ScaleDownWindow = DefaultScaleDownWindow
	}
	if c.Tolerance == 0 {
		c.Tolerance = DefaultTolerance
	}
}

// Validate checks a configuration (after defaults).
func (c *Config) Validate() error {
	var errs []error
	if c.Min < 0 {
		errs = append(errs, fmt.Errorf("min: must not be negative"))
	}
	if c.Max < 1 || c.Max < c.Min {
		errs = append(errs, fmt.Errorf("max: must be at least 1 and at least min (%d)", c.Min))
	}
	if !(c.TargetInflight > 0) || math.IsInf(c.TargetInflight, 0) {
		errs = append(errs, fmt.Errorf("targetInflight: must be a positive number"))
	}
	if c.TargetQueueTime < 0 {
		errs = append(errs, fmt.Errorf("targetQueueTime: must not be negative"))
	}
	if c.MetricWindow < 0 || c.ScaleUpWindow < 0 || c.ScaleDownWindow < 0 {
		errs = append(errs, fmt.Errorf("windows must not be negative"))
	}
	if c.Tolerance < 0 || c.Tolerance >= 1 {
		errs = append(errs, fmt.Errorf("tolerance: must be in [0, 1)"))
	}
	return errors.Join(errs...)
}

// Observation is what the router saw over one interval ending at Time.
type Observation struct {
	Time     time.Time
	Interval time.Duration
	// Concurrency is the time-average of requests in flight plus queued
	// over the interval, summed over replicas.
	Concurrency float64
	// QueueTime is the mean wait for a replica of the requests that got one
	// in the interval; Requests is how many did.
	QueueTime time.Duration
	Requests  int
}

// Decision is a recommendation with its reasons.
type Decision struct {
	Replicas int
	// Raw is the recommendation before stabilisation and bounds.
	Raw int
	// Load is the mean concurrency over the metric window; QueueTime the
	// mean queue wait.
	Load      float64
	QueueTime time.Duration
	Reason    string
}

type rec struct {
	t time.Time
	n int
}

// Autoscaler keeps the recent observations and recommendations of one
// deployment.
type Autoscaler struct {
	cfg  Config
	obs  []Observation
	recs []rec
}

// New makes an autoscaler; cfg's zero durations take the defaults.
func New(cfg Config) (*Autoscaler, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Autoscaler{cfg: cfg}, nil
}

// Config returns the configuration in effect (defaults filled in).
func (a *Autoscaler) Config() Config { return a.cfg }

// SetConfig changes the configuration, keeping the history (a spec change
// of min, max or target takes effect at the next Recommend).
func (a *Autoscaler) SetConfig(cfg Config) error {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	a.cfg = cfg
	return nil
}

// Observe records an observation. Observations must come in time order;
// one older than the last is ignored.
func (a *Autoscaler) Observe(o Observation) {
	if n := len(a.obs); n > 0 && o.Time.Before(a.obs[n-1].Time) {
		return
	}
	if o.Interval <= 0 {
		return
	}
	a.obs = append(a.obs, o)
	a.trimObs(o.Time)
}

func (a *Autoscaler) trimObs(now time.Time) {
	cut := now.Add(-a.cfg.MetricWindow)
	i := 0
	for i < len(a.obs) && !a.obs[i].Time.After(cut) {
		i++
	}
	a.obs = a.obs[i:]
}

// load averages the observations of the metric window, weighted by their
// intervals; ok is false when there are none.
func (a *Autoscaler) load(now time.Time) (conc float64, queue time.Duration, ok bool) {
	a.trimObs(now)
	var w, c float64
	var qn int
	var qsum float64
	for _, o := range a.obs {
		w += o.Interval.Seconds()
		c += o.Concurrency * o.Interval.Seconds()
		qsum += float64(o.QueueTime) * float64(o.Requests)
		qn += o.Requests
	}
	if w == 0 {
		return 0, 0, false
	}
	if qn > 0 {
		queue = time.Duration(qsum / float64(qn))
	}
	return c / w, queue, true
}

// Recommend returns the replica count for now, given the count currently
// asked for. Call it once per control tick: every call is remembered for
// the stabilisation windows.
func (a *Autoscaler) Recommend(now time.Time, current int) Decision {
	cfg := &a.cfg
	conc, queue, ok := a.load(now)
	d := Decision{Load: conc, QueueTime: queue}
	if !ok {
		// No data (the control loop stalled, or just started): hold the
		// count, within bounds.
		d.Raw = current
		d.Replicas = clamp(current, cfg.Min, cfg.Max)
		d.Reason = "no observations in the metric window: holding"
		return d
	}
	raw := int(math.Ceil(conc/cfg.TargetInflight - 1e-9))
	reason := fmt.Sprintf("load %.2f in flight at target %.4g per replica", conc, cfg.TargetInflight)
	if current > 0 {
		ratio := conc / (float64(current) * cfg.TargetInflight)
		if math.Abs(ratio-1) <= cfg.Tolerance {
			raw = current
			reason += fmt.Sprintf(" (within %.0f%% of %d)", cfg.Tolerance*100, current)
		}
	}
	if cfg.TargetQueueTime > 0 && queue > cfg.TargetQueueTime && raw <= current {
		raw = current + 1
		reason = fmt.Sprintf("queue time %v above target %v", queue.Round(time.Millisecond), cfg.TargetQueueTime)
	}
	d.Raw = raw
	if len(a.recs) == 0 {
		// A fresh autoscaler (a new leader, a restarted server) counts the
		// current size as recommended now, so it waits a whole window
		// before giving replicas back instead of acting on one sample.
		a.recs = append(a.recs, rec{now, current})
	}
	a.recs = append(a.recs, rec{now, raw})
	a.trimRecs(now)

	up, down := a.stabilised(now, raw)
	n := current
	switch {
	case up > current:
		n = up
	case down < current:
		n = down
		if raw < current {
			reason += fmt.Sprintf("; scale-down window %v", cfg.ScaleDownWindow)
		}
	}
	d.Replicas = clamp(n, cfg.Min, cfg.Max)
	switch {
	case d.Replicas == cfg.Min && n <= cfg.Min && conc == 0:
		d.Reason = fmt.Sprintf("idle: at min %d", cfg.Min)
	case d.Replicas != n:
		d.Reason = reason + fmt.Sprintf("; bounded to [%d, %d]", cfg.Min, cfg.Max)
	default:
		d.Reason = reason
	}
	return d
}

// stabilised returns the smallest recommendation of the scale-up window
// and the largest of the scale-down window (each includes the latest).
func (a *Autoscaler) stabilised(now time.Time, latest int) (up, down int) {
	up, down = latest, latest
	upCut, downCut := now.Add(-a.cfg.ScaleUpWindow), now.Add(-a.cfg.ScaleDownWindow)
	for _, r := range a.recs {
		if r.t.After(upCut) && r.n < up {
			up = r.n
		}
		if r.t.After(downCut) && r.n > down {
			down = r.n
		}
	}
	return up, down
}

func (a *Autoscaler) trimRecs(now time.Time) {
	cut := now.Add(-max(a.cfg.ScaleUpWindow, a.cfg.ScaleDownWindow))
	i := 0
	for i < len(a.recs)-1 && !a.recs[i].t.After(cut) {
		i++
	}
	a.recs = a.recs[i:]
}

func clamp(n, lo, hi int) int {
	return max(lo, min(n, hi))
}
