package sched

import (
	"time"

	"github.com/google/btree"
)

// endIndex orders the running jobs that declared a runtime by their
// expected end (start plus runtime), so that an EASY reservation walks them
// in order without sorting every running job on every cycle: at 131,072
// GPUs that sort was most of a simulated day's CPU time.
type endIndex struct {
	t *btree.BTreeG[*job]
}

func newEndIndex() endIndex { return endIndex{t: btree.NewG(32, endLess)} }

// endLess orders by expected end, then by ID (unique among known jobs).
func endLess(a, b *job) bool {
	if a.end != b.end {
		return a.end < b.end
	}
	return a.spec.ID < b.spec.ID
}

// expectedEnd is when a job started at started with runtime r should end,
// in Unix nanoseconds, saturated instead of overflowing.
func expectedEnd(started time.Time, r time.Duration) int64 {
	const maxNano = 1<<63 - 1
	s := started.UnixNano()
	if r > 0 && s > maxNano-int64(r) {
		return maxNano
	}
	return s + int64(r)
}

// add files a job that has just been placed.
func (x endIndex) add(j *job) {
	if j.spec.Runtime <= 0 {
		return
	}
	j.end = expectedEnd(j.started, j.spec.Runtime)
	x.t.ReplaceOrInsert(j)
}

// remove takes a job that stops running off the index.
func (x endIndex) remove(j *job) {
	if j.spec.Runtime > 0 {
		x.t.Delete(j)
	}
}

// ascend calls fn with the indexed jobs by expected end until it returns
// false.
func (x endIndex) ascend(fn func(j *job) bool) { x.t.Ascend(fn) }

func (x endIndex) len() int { return x.t.Len() }

// cloneMapped is an index of the same jobs of a cloned scheduler, which
// mapJob translates.
func (x endIndex) cloneMapped(mapJob func(*job) *job) endIndex {
	n := newEndIndex()
	copyMapped(n.t, x.t, mapJob)
	return n
}

// copyMapped files into dst the jobs of src, translated by mapJob.
func copyMapped(dst, src *btree.BTreeG[*job], mapJob func(*job) *job) {
	src.Ascend(func(j *job) bool {
		dst.ReplaceOrInsert(mapJob(j))
		return true
	})
}

// startCmp orders jobs without a declared runtime for a reservation: the
// longest-running first (they are as likely as any to end next), then the
// policy's order.
func startCmp(a, b *job) int {
	if c := a.started.Compare(b.started); c != 0 {
		return c
	}
	return jobCmp(a, b)
}

// pendIndex holds the pending jobs in the policy's order (jobCmp). Every
// order's key is fixed while a job waits (submit time, priority, service
// attained before it was requeued), so it is computed once when the job
// joins the queue, and a cycle walks a copy-on-write snapshot instead of
// sorting every pending job: strict FIFO then costs the jobs it looks at,
// not the queue.
type pendIndex struct {
	t *btree.BTreeG[*job]
}

func newPendIndex() pendIndex {
	return pendIndex{t: btree.NewG(32, func(a, b *job) bool { return jobCmp(a, b) < 0 })}
}

func (x pendIndex) add(j *job)    { x.t.ReplaceOrInsert(j) }
func (x pendIndex) remove(j *job) { x.t.Delete(j) }

func (x pendIndex) cloneMapped(mapJob func(*job) *job) pendIndex {
	n := newPendIndex()
	copyMapped(n.t, x.t, mapJob)
	return n
}
