package sched

import (
	"cmp"
	"time"
)

// A profile is a policy. The cycle walks pending jobs in the profile's
// order (with fair share between queues and tenants when asked) and, for
// each job, runs the named extension points:
//
//	filter   quota limits and, for non-preemptible jobs, guaranteed quota
//	         (queues.go: quotaRoom)
//	allocate find a placement on free GPUs: count fit bottom-up, the fewest
//	         leaves at the lowest level, best fit (score: pack or spread)
//	         (place.go)
//	reclaim  take back guaranteed quota lent to queues above their
//	         guarantee (preempt.go)
//	preempt  evict lower-ranked jobs of the same queue (preempt.go)
//	reserve  EASY: the first job that cannot start holds a reservation;
//	backfill later jobs start only when they do not delay it (backfill.go)
//	grow     give elastic jobs back the replicas they lack (elastic.go)
//
// Each policy is a small file that picks an order and a set of actions.
type profile struct {
	name      Policy
	order     orderPlugin
	fairShare bool     // choose queues, then tenants, by fair share
	strict    bool     // the first job that cannot start stops the cycle
	backfill  bool     // EASY backfill with a reservation for the first blocked job
	filters   []filter // what may be admitted at all, apart from where
	actions   []action // tried, in order, on a job that allocate could not place
	grow      bool
}

// filter bounds how many replicas of a job may start now, whatever the
// placement; it returns why when that is fewer than the job needs.
type filter interface {
	name() string
	room(j *job) (int, wait)
}

// quotaFilter applies the queue tree: limits (guarantee plus borrowing
// limit) on every queue of the job's path, and for non-preemptible jobs
// the guarantees, since they could never be reclaimed.
type quotaFilter struct{}

func (quotaFilter) name() string            { return "quota" }
func (quotaFilter) room(j *job) (int, wait) { return quotaRoom(j) }

// orderPlugin orders pending jobs (inside a tenant's lane when fair share
// is on, globally otherwise) and ranks them for preemption.
type orderPlugin interface {
	name() string
	// key precomputes a job's sort key at the start of a cycle.
	key(s *Scheduler, j *job, now time.Time) int64
	// rank is what preemption compares: a job may preempt jobs of its own
	// queue with a strictly lower rank. nil-able: ok=false means the order
	// has no notion of rank.
	rank(s *Scheduler, j *job, now time.Time) int64
	// byPriority says whether heads of tenants' lanes compete on key before
	// fair share.
	byPriority() bool
}

// action is an extension point tried on a job that could not be placed on
// free GPUs.
type action interface {
	name() string
	try(c *cycle, j *job) bool
}

func profileFor(p Policy) profile {
	var pr profile
	switch p {
	case PolicyFIFO:
		pr = fifoProfile()
	case PolicyBackfill:
		pr = backfillProfile()
	case PolicyLAS:
		pr = lasProfile()
	case PolicyDRF:
		pr = drfProfile()
	default:
		pr = defaultProfile()
	}
	pr.filters = append([]filter{quotaFilter{}}, pr.filters...)
	return pr
}

// jobCmp orders jobs by precomputed key (lower first), then submit time,
// then ID: a total order that does not depend on the order of Submit calls.
func jobCmp(a, b *job) int {
	if a.key != b.key {
		return cmp.Compare(a.key, b.key)
	}
	if c := a.spec.Submitted.Compare(b.spec.Submitted); c != 0 {
		return c
	}
	return cmp.Compare(a.spec.ID, b.spec.ID)
}

// submitOrder is first come, first served.
type submitOrder struct{}

func (submitOrder) name() string                           { return "submit-time" }
func (submitOrder) key(*Scheduler, *job, time.Time) int64  { return 0 }
func (submitOrder) rank(*Scheduler, *job, time.Time) int64 { return 0 }
func (submitOrder) byPriority() bool                       { return false }

// priorityOrder is highest priority first, then first come.
type priorityOrder struct{}

func (priorityOrder) name() string                                 { return "priority" }
func (priorityOrder) key(_ *Scheduler, j *job, _ time.Time) int64  { return -int64(j.spec.Priority) }
func (priorityOrder) rank(_ *Scheduler, j *job, _ time.Time) int64 { return int64(j.spec.Priority) }
func (priorityOrder) byPriority() bool                             { return true }
