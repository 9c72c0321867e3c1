package sched

import (
	"fmt"
	"strings"
	"time"
)

// Policy names a scheduling policy. Every policy is a Config of the same
// scheduler: an order of pending jobs and a set of actions (see profile.go),
// not a separate implementation.
type Policy string

const (
	// PolicyDefault turns everything on: hierarchical fair share with
	// guaranteed quotas, priority order, reclaim and priority preemption,
	// topology-aware placement and EASY backfill. The zero Policy is
	// PolicyDefault.
	PolicyDefault Policy = "default"
	// PolicyFIFO starts jobs strictly in submit order: the first job that
	// cannot start blocks everyone behind it.
	PolicyFIFO Policy = "fifo"
	// PolicyBackfill is submit order with EASY backfill: the first blocked
	// job gets a reservation and later jobs start only when they do not
	// delay it (Slurm-like).
	PolicyBackfill Policy = "backfill"
	// PolicyLAS orders jobs by least attained service (GPU-seconds, in
	// exponentially wider bands) and preempts jobs that attained a band more
	// (Tiresias-like).
	PolicyLAS Policy = "las"
	// PolicyDRF orders queues and tenants by weighted dominant share,
	// starting whatever fits, and reclaims guaranteed quota.
	PolicyDRF Policy = "drf"
)

// Policies lists the policies.
var policyNames = []Policy{PolicyFIFO, PolicyBackfill, PolicyLAS, PolicyDRF, PolicyDefault}

// Policies returns the known policies.
func Policies() []Policy { return append([]Policy(nil), policyNames...) }

// ParsePolicy checks a policy name ("" is the default policy).
func ParsePolicy(s string) (Policy, error) {
	if s == "" {
		return PolicyDefault, nil
	}
	for _, p := range policyNames {
		if string(p) == s {
			return p, nil
		}
	}
	names := make([]string, len(policyNames))
	for i, p := range policyNames {
		names[i] = string(p)
	}
	return "", fmt.Errorf("unknown policy %q (want one of %s)", s, strings.Join(names, ", "))
}

// Config tunes the scheduler. The zero Config is the default policy with
// no decay of past usage and no loop guards; DefaultConfig sets sensible
// guards.
type Config struct {
	Policy Policy
	// FairShareHalfLife decays past usage in fair-share order: a queue's
	// usage counts half after one half-life. 0 uses the current usage only.
	FairShareHalfLife time.Duration
	// MinRuntime protects a job that started less than this long ago from
	// being preempted (loop guard).
	MinRuntime time.Duration
	// PreemptBackoff stops a job that was preempted from preempting others
	// for this long after (loop guard).
	PreemptBackoff time.Duration
	// Spread places worst-fit (the emptiest node, leaf and block) instead
	// of best-fit packing, to balance load. Gangs still span the fewest leaf
	// switches possible.
	Spread bool
	// LASQuantum is the attained service (GPU-seconds) that ends the first
	// band of PolicyLAS; each following band is LASFactor times wider.
	// Defaults: one GPU-hour and 10.
	LASQuantum float64
	LASFactor  float64
	// MaxPreemptTargets bounds the domains tried for one preemption
	// (default 4 per level).
	MaxPreemptTargets int
}

// DefaultConfig is the default policy with the loop guards on: a one-hour
// half-life for past usage, five minutes of protected runtime and a
// five-minute backoff after a preemption.
func DefaultConfig() Config {
	return Config{
		Policy:            PolicyDefault,
		FairShareHalfLife: time.Hour,
		MinRuntime:        5 * time.Minute,
		PreemptBackoff:    5 * time.Minute,
	}
}

// ConfigFor returns DefaultConfig with another policy.
func ConfigFor(p Policy) Config {
	c := DefaultConfig()
	c.Policy = p
	return c
}

func (c Config) withDefaults() Config {
	if c.Policy == "" {
		c.Policy = PolicyDefault
	}
	if c.LASQuantum <= 0 {
		c.LASQuantum = 3600
	}
	if c.LASFactor <= 1 {
		c.LASFactor = 10
	}
	if c.MaxPreemptTargets <= 0 {
		c.MaxPreemptTargets = 4
	}
	if c.FairShareHalfLife < 0 {
		c.FairShareHalfLife = 0
	}
	return c
}

// RejectError is why a job or queue was refused: Field names the offending
// field as the API spells it, Reason says what is wrong with it.
type RejectError struct {
	Job    string
	Field  string
	Reason string
}

func (e *RejectError) Error() string {
	if e.Job != "" {
		return fmt.Sprintf("job %q: %s: %s", e.Job, e.Field, e.Reason)
	}
	return fmt.Sprintf("%s: %s", e.Field, e.Reason)
}

func reject(id, field, format string, args ...any) *RejectError {
	return &RejectError{Job: id, Field: field, Reason: fmt.Sprintf(format, args...)}
}

// String names a decision kind.
func (k DecisionKind) String() string {
	switch k {
	case Place:
		return "place"
	case Preempt:
		return "preempt"
	case Requeue:
		return "requeue"
	case Shrink:
		return "shrink"
	case Grow:
		return "grow"
	case Reject:
		return "reject"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MarshalText makes decision kinds read as names in JSON.
func (k DecisionKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }
