package sched

import "time"

// lasProfile: least attained service first (Tiresias-like). Attained
// GPU-seconds fall in bands that widen by LASFactor from LASQuantum; a job
// preempts jobs of its queue in a higher band, which MinRuntime keeps from
// thrashing.
func lasProfile() profile {
	return profile{name: PolicyLAS, order: lasOrder{}, actions: []action{preemptAction{}}, grow: true}
}

type lasOrder struct{}

func (lasOrder) name() string { return "least-attained-service" }

func (lasOrder) key(s *Scheduler, j *job, now time.Time) int64 {
	return int64(s.lasBand(j.attainedAt(now)))
}

func (lasOrder) rank(s *Scheduler, j *job, now time.Time) int64 {
	return -int64(s.lasBand(j.attainedAt(now)))
}

func (lasOrder) byPriority() bool { return true }

// lasBand is the band of attained service a: 0 below LASQuantum, then one
// more per factor of LASFactor.
func (s *Scheduler) lasBand(a float64) int {
	b, edge := 0, s.cfg.LASQuantum
	for a >= edge && b < 64 {
		b++
		edge *= s.cfg.LASFactor
	}
	return b
}
