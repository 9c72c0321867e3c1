package sched

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// DefaultQueue is the queue a job without one goes to, and the only queue
// before SetQueues: it is guaranteed the whole fabric.
const DefaultQueue = "default"

// queue is a node of the queue tree with its usage. Usage is in GPUs, per
// GPU model for dominant shares.
type queue struct {
	spec       Queue
	parent     *queue
	children   []*queue // sorted by name
	guaranteed int64
	limit      int64 // guaranteed + borrow limit; -1: none
	weight     float64
	cur        int64     // GPUs held by running jobs below
	curM       []int64   // the same per GPU model
	dec        []float64 // past usage per model, decayed by the half-life
	restored   int64     // GPUs of restored jobs below (may exceed limits)
	whole      bool      // guaranteed the whole fabric: the guarantee never binds

	// leaf queues only
	tenants  []*tenant // sorted by name
	tenantBy map[string]*tenant
	running  []*job

	npend  int // pending jobs below (kept with fair share)
	remain int // cycle scratch: pending jobs below not yet considered
}

// tenant is the usage of one tenant inside a leaf queue, for fair share
// between tenants.
type tenant struct {
	name string
	q    *queue
	cur  int64
	curM []int64
	dec  []float64
	pend pendIndex // its pending jobs in order (kept with fair share)
	lane *cursor   // cycle scratch: where the cycle is in pend
}

type queueTree struct {
	byName map[string]*queue
	roots  []*queue
	all    []*queue // sorted by name
}

// buildQueues checks a queue tree. Errors name the queue and the field.
func buildQueues(qs []Queue, totalGPUs int, models int) (*queueTree, error) {
	if len(qs) == 0 {
		qs = []Queue{{Name: DefaultQueue, Guaranteed: totalGPUs, BorrowLimit: 0, Weight: 1}}
	}
	qt := &queueTree{byName: map[string]*queue{}}
	for i, s := range qs {
		field := func(f string) string { return fmt.Sprintf("queues[%d](%s).%s", i, s.Name, f) }
		switch {
		case s.Name == "":
			return nil, &RejectError{Field: fmt.Sprintf("queues[%d].name", i), Reason: "a queue needs a name"}
		case qt.byName[s.Name] != nil:
			return nil, &RejectError{Field: field("name"), Reason: "defined twice"}
		case s.Guaranteed < 0:
			return nil, &RejectError{Field: field("guaranteed"), Reason: fmt.Sprintf("must be zero or more GPUs, got %d", s.Guaranteed)}
		case s.BorrowLimit < -1:
			return nil, &RejectError{Field: field("borrowLimit"), Reason: fmt.Sprintf("must be -1 (no limit) or zero or more GPUs, got %d", s.BorrowLimit)}
		case s.Weight < 0 || math.IsNaN(s.Weight) || math.IsInf(s.Weight, 0):
			return nil, &RejectError{Field: field("weight"), Reason: fmt.Sprintf("must be a positive number (0 means 1), got %v", s.Weight)}
		}
		q := &queue{spec: s, guaranteed: int64(s.Guaranteed), limit: -1, weight: s.Weight,
			curM: make([]int64, models), dec: make([]float64, models)}
		// A limit or guarantee as large as the fabric never binds before
		// capacity does: leave it out, so a full fabric reads as full, not
		// as a queue at its quota.
		if s.BorrowLimit >= 0 && s.Guaranteed+s.BorrowLimit < totalGPUs {
			q.limit = int64(s.Guaranteed + s.BorrowLimit)
		}
		q.whole = s.Guaranteed >= totalGPUs
		if q.weight == 0 {
			q.weight = 1
		}
		qt.byName[s.Name] = q
		qt.all = append(qt.all, q)
	}
	slices.SortFunc(qt.all, func(a, b *queue) int { return cmp.Compare(a.spec.Name, b.spec.Name) })
	for i, s := range qs {
		q := qt.byName[s.Name]
		if s.Parent == "" {
			qt.roots = append(qt.roots, q)
			continue
		}
		p := qt.byName[s.Parent]
		if p == nil {
			return nil, &RejectError{Field: fmt.Sprintf("queues[%d](%s).parent", i, s.Name), Reason: fmt.Sprintf("unknown queue %q", s.Parent)}
		}
		q.parent = p
		p.children = append(p.children, q)
	}
	for _, q := range qt.all {
		seen := 0
		for a := q.parent; a != nil; a = a.parent {
			if a == q || seen > len(qt.all) {
				return nil, &RejectError{Field: "queues(" + q.spec.Name + ").parent", Reason: "the queue is its own ancestor"}
			}
			seen++
		}
	}
	slices.SortFunc(qt.roots, func(a, b *queue) int { return cmp.Compare(a.spec.Name, b.spec.Name) })
	top := int64(0)
	for _, q := range qt.all {
		slices.SortFunc(q.children, func(a, b *queue) int { return cmp.Compare(a.spec.Name, b.spec.Name) })
		sum := int64(0)
		for _, c := range q.children {
			sum += c.guaranteed
		}
		if len(q.children) > 0 && sum > q.guaranteed {
			return nil, &RejectError{Field: "queues(" + q.spec.Name + ").guaranteed",
				Reason: fmt.Sprintf("its children are guaranteed %d GPUs in all, more than its own %d", sum, q.guaranteed)}
		}
		if q.parent == nil {
			top += q.guaranteed
		}
		if q.leaf() {
			q.tenantBy = map[string]*tenant{}
		}
	}
	if top > int64(totalGPUs) {
		return nil, &RejectError{Field: "queues.guaranteed", Reason: fmt.Sprintf("top-level queues are guaranteed %d GPUs in all; the fabric has %d", top, totalGPUs)}
	}
	return qt, nil
}

func (q *queue) leaf() bool { return len(q.children) == 0 }

func (qt *queueTree) leafNames() string {
	var names []string
	for _, q := range qt.all {
		if q.leaf() {
			names = append(names, q.spec.Name)
		}
	}
	if len(names) > 8 {
		names = append(names[:8], "...")
	}
	return strings.Join(names, ", ")
}

func (q *queue) tenant(name string, models int) *tenant {
	if t := q.tenantBy[name]; t != nil {
		return t
	}
	t := &tenant{name: name, q: q, curM: make([]int64, models), dec: make([]float64, models), pend: newPendIndex()}
	q.tenantBy[name] = t
	i, _ := slices.BinarySearchFunc(q.tenants, name, func(a *tenant, n string) int { return cmp.Compare(a.name, n) })
	q.tenants = slices.Insert(q.tenants, i, t)
	return t
}

// charge adds gpus of model m to a job's queue path and tenant.
func charge(j *job, gpus int64, m int) {
	for a := j.leaf; a != nil; a = a.parent {
		a.cur += gpus
		a.curM[m] += gpus
		if j.restored {
			a.restored += gpus
		}
	}
	j.ten.cur += gpus
	j.ten.curM[m] += gpus
}

// decay moves past usage towards the current usage over dt.
func decayUsage(cur []int64, dec []float64, f float64) {
	for m := range dec {
		dec[m] = dec[m]*f + float64(cur[m])*(1-f)
	}
}

func (s *Scheduler) decay(dt time.Duration) {
	h := s.cfg.FairShareHalfLife
	if h <= 0 || dt <= 0 {
		return
	}
	f := math.Exp2(-float64(dt) / float64(h))
	for _, q := range s.qt.all {
		decayUsage(q.curM, q.dec, f)
		for _, t := range q.tenants {
			decayUsage(t.curM, t.dec, f)
		}
	}
}

// share is the dominant share of a usage: the largest fraction of any GPU
// model's fleet it holds, counting past usage (decayed) half when a
// half-life is set.
func (s *Scheduler) share(curM []int64, dec []float64) float64 {
	sh := 0.0
	for m, c := range curM {
		u := float64(c)
		if s.cfg.FairShareHalfLife > 0 {
			u = (u + dec[m]) / 2
		}
		if g := s.t.modelGPUs[m]; g > 0 {
			sh = max(sh, u/float64(g))
		}
	}
	return sh
}

// queueKey orders sibling queues for fair share: queues below their
// guarantee first (by how much of it they use), then the rest by weighted
// dominant share, so idle capacity is lent by weight.
func (s *Scheduler) queueKey(q *queue) (int, float64) {
	if q.cur < q.guaranteed {
		u := 0.0
		for m, c := range q.curM {
			x := float64(c)
			if s.cfg.FairShareHalfLife > 0 {
				x = (x + q.dec[m]) / 2
			}
			u += x
		}
		return 0, u / float64(q.guaranteed)
	}
	return 1, s.share(q.curM, q.dec) / q.weight
}

// inQuota reports whether gpus more GPUs keep every queue on j's path
// within its guarantee.
func inQuota(j *job, gpus int64) bool {
	for a := j.leaf; a != nil; a = a.parent {
		if !a.whole && a.cur+gpus > a.guaranteed {
			return false
		}
	}
	return true
}

// quotaRoom is how many more replicas of j its queue path allows (limits,
// and guarantees for a non-preemptible job), in whole tensor-parallel
// groups, and the queue that binds.
func quotaRoom(j *job) (int, wait) {
	room := int64(math.MaxInt64)
	var w wait
	for a := j.leaf; a != nil; a = a.parent {
		if a.limit >= 0 && a.limit-a.cur < room {
			room = a.limit - a.cur
			w = wait{code: wQuota, q: a, n1: a.cur, n2: a.limit}
		}
		if !j.spec.Preemptible && !a.whole && a.guaranteed-a.cur < room {
			room = a.guaranteed - a.cur
			w = wait{code: wInQuota, q: a, n1: a.cur, n2: a.guaranteed}
		}
	}
	if room == math.MaxInt64 {
		return math.MaxInt32, w
	}
	n := int(max(room, 0) / int64(j.spec.GPUsPerReplica))
	return n / j.m * j.m, w
}

// borrowing reports whether v sits in a part of the queue tree that uses
// more than its guarantee, seen from j: the child of their lowest common
// ancestor on v's side holds more than it is guaranteed.
func borrowing(v, j *job) (*queue, bool) {
	for a := v.leaf; a != nil; a = a.parent {
		if isAncestor(a.parent, j.leaf) {
			if a == j.leaf || isAncestor(a, j.leaf) {
				return nil, false
			}
			return a, a.cur > a.guaranteed
		}
	}
	return nil, false
}

// isAncestor reports whether a is q or above it; nil is above everything.
func isAncestor(a, q *queue) bool {
	if a == nil {
		return true
	}
	for x := q; x != nil; x = x.parent {
		if x == a {
			return true
		}
	}
	return false
}
