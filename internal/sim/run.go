package sim

import (
	"gpucloud/internal/sched"
)

// SchedConfig is the scheduler configuration a run uses: the scheduler's
// defaults (loop guards, fair-share half-life) with the run's policy.
func SchedConfig(p Policy) sched.Config { return sched.ConfigFor(sched.Policy(p)) }

// newRun builds the scheduler and the engine of one run.
func newRun(cfg Config, in Input) (*engine, *sched.Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	s := sched.New(cfg.Fabric, SchedConfig(cfg.Policy))
	e, err := newEngine(s, cfg, in)
	if err != nil {
		return nil, nil, err
	}
	return e, s, nil
}

// Run replays the workload on the fabric through internal/sched and
// reports what it measured.
func Run(cfg Config, in Input) (*Result, error) {
	e, _, err := newRun(cfg, in)
	if err != nil {
		return nil, err
	}
	return e.run()
}
