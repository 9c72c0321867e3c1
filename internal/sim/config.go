package sim

import (
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"gpucloud/internal/sim/workload"
	"gpucloud/internal/topology"
)

// Policy names a scheduling policy of internal/sched to simulate.
type Policy string

const (
	PolicyDefault  Policy = "default"  // the scheduler with everything on
	PolicyFIFO     Policy = "fifo"     // strict submit order: the head blocks the queue
	PolicyBackfill Policy = "backfill" // EASY backfill, Slurm-like
	PolicyLAS      Policy = "las"      // least attained service, Tiresias-like
	PolicyDRF      Policy = "drf"      // fair share between tenants
)

// Policies lists the policies in the order tables print them.
var Policies = []Policy{PolicyFIFO, PolicyBackfill, PolicyLAS, PolicyDRF, PolicyDefault}

// ParsePolicy checks a --policy value.
func ParsePolicy(s string) (Policy, error) {
	for _, p := range Policies {
		if string(p) == s {
			return p, nil
		}
	}
	names := make([]string, len(Policies))
	for i, p := range Policies {
		names[i] = string(p)
	}
	return "", fmt.Errorf("unknown policy %q (want one of %s)", s, strings.Join(names, ", "))
}

// QueueMode says how the workload's tenants become queues.
type QueueMode string

const (
	// QueuesTenant gives each tenant a queue guaranteed an equal share of
	// the fleet, free to borrow idle GPUs beyond it (as Philly's virtual
	// clusters, or teams on a shared cloud). Borrowed GPUs can be reclaimed;
	// a non-preemptible job must fit its tenant's guarantee.
	QueuesTenant QueueMode = "tenant"
	// QueuesShared puts every job in one queue guaranteed the whole fleet;
	// tenants share it by fair share.
	QueuesShared QueueMode = "shared"
)

// ParseQueueMode checks a --queues value.
func ParseQueueMode(s string) (QueueMode, error) {
	switch QueueMode(s) {
	case QueuesTenant, QueuesShared:
		return QueueMode(s), nil
	}
	return "", fmt.Errorf("unknown queue mode %q (want tenant or shared)", s)
}

// Config is one simulation run.
type Config struct {
	Fabric *topology.Fabric
	Policy Policy
	// Interval bounds the time between scheduling cycles while jobs wait:
	// besides the cycle after every instant at which something happened, a
	// cycle runs when Interval has passed since the last one, so that
	// time-driven decisions (priority bands, fair-share decay, back-off)
	// happen.
	Interval time.Duration
	// MinCycleGap keeps cycles triggered by events at least this far apart,
	// as the server keeps its cycles half its interval apart so that bursts
	// are handled together. 0 runs a cycle after every instant at which
	// something happened (a server with a very short interval).
	MinCycleGap time.Duration
	// Slowdown stretches a job placed across more leaf switches than the
	// fewest that could hold it: it runs (1+Slowdown) times as long.
	Slowdown float64
	Failures FailureModel
	// Checkpoint is the checkpoint interval of jobs that name none. A
	// failure or a preemption loses the work since the last checkpoint.
	Checkpoint time.Duration
	// RestartOverhead is the time a job spends, holding its GPUs, before it
	// makes progress again after it was interrupted (relaunch, loading the
	// checkpoint, warm-up). Its GPU time counts as lost.
	RestartOverhead time.Duration
	// EstimateFactor sets the run time each job declares to the scheduler
	// (what backfill plans with): its true duration times this factor; 0
	// declares none.
	EstimateFactor float64
	// Queues says how tenants map to the scheduler's queues, unless
	// QueueTree gives the tree: then a tenant's jobs go to the leaf queue
	// of its name, or to the leaf queue "default".
	Queues    QueueMode
	QueueTree []QueueSpec
	// Seed drives the failures.
	Seed uint64
	// MaxTime stops the run at this simulated time (0: no limit); jobs still
	// in flight are reported unfinished.
	MaxTime time.Duration
	// Progress, when set, gets a progress bar for runs longer than a couple
	// of seconds of wall time; Label prefixes it.
	Progress io.Writer
	Label    string
}

// Defaults of Config.
const (
	DefaultInterval        = time.Minute
	DefaultSlowdown        = 0.2
	DefaultCheckpoint      = 15 * time.Minute
	DefaultRestartOverhead = 2 * time.Minute
)

// DefaultConfig returns the configuration `gpucloud sim` starts from.
func DefaultConfig(f *topology.Fabric) Config {
	return Config{
		Fabric: f, Policy: PolicyDefault, Interval: DefaultInterval, Slowdown: DefaultSlowdown,
		Failures: Llama3Failures(), Checkpoint: DefaultCheckpoint, RestartOverhead: DefaultRestartOverhead,
		EstimateFactor: 1, Queues: QueuesTenant, Seed: 1,
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.Fabric == nil {
		return fmt.Errorf("no fabric to simulate")
	}
	if _, err := ParsePolicy(string(c.Policy)); err != nil {
		return err
	}
	if _, err := ParseQueueMode(string(c.Queues)); err != nil {
		return err
	}
	switch {
	case c.Interval <= 0:
		return fmt.Errorf("scheduling interval must be positive, got %v", c.Interval)
	case c.MinCycleGap < 0:
		return fmt.Errorf("minimum cycle gap must be zero or positive, got %v", c.MinCycleGap)
	case c.Slowdown < 0 || math.IsNaN(c.Slowdown) || math.IsInf(c.Slowdown, 0):
		return fmt.Errorf("slowdown must be zero or positive, got %v", c.Slowdown)
	case c.Checkpoint < 0:
		return fmt.Errorf("checkpoint interval must be zero (never) or positive, got %v", c.Checkpoint)
	case c.RestartOverhead < 0:
		return fmt.Errorf("restart overhead must be zero or positive, got %v", c.RestartOverhead)
	case c.EstimateFactor < 0 || math.IsNaN(c.EstimateFactor) || math.IsInf(c.EstimateFactor, 0):
		return fmt.Errorf("run-time estimate factor must be zero or positive, got %v", c.EstimateFactor)
	case c.MaxTime < 0:
		return fmt.Errorf("max time must be zero or positive, got %v", c.MaxTime)
	}
	return c.Failures.Validate()
}

// Input is a workload to replay; each run opens its own stream of it.
type Input struct {
	Name    string
	Start   time.Time // wall time of offset 0, handed to the scheduler
	Tenants []string  // every tenant the jobs name, for the queues
	Jobs    int       // number of jobs, -1 when unknown
	Open    func() workload.Source
}

// TraceInput replays a loaded trace.
func TraceInput(t *workload.Trace) Input {
	return Input{Name: t.Name, Start: t.Start, Tenants: t.Tenants(), Jobs: len(t.Jobs), Open: t.Source}
}

// SyntheticInput replays a generated workload.
func SyntheticInput(s workload.Synthetic) Input {
	return Input{Name: fmt.Sprintf("synthetic-%s", s.Mix), Start: workload.Epoch, Tenants: s.Tenants(),
		Jobs: s.Jobs, Open: s.Source}
}
