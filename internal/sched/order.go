package sched

import (
	"time"

	"github.com/google/btree"
)

// The scheduler's ordered indexes of jobs (B-trees): running jobs by
// expected end, pending jobs in the policy's order, and the cursor a cycle
// reads a snapshot of the latter with.

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

// cursor reads a snapshot of a pending index in order, a chunk at a time
// (a strict cycle that stops early reads little).
type cursor struct {
	snap  *btree.BTreeG[*job]
	buf   []*job
	pos   int
	pivot *job // the sort fields of the last job read
	done  bool
}

const chunk = 64

func newCursor(x pendIndex) *cursor { return &cursor{snap: x.t.Clone()} }

// peek is the next job, or nil at the end.
func (c *cursor) peek() *job {
	for c.pos >= len(c.buf) {
		if c.done {
			return nil
		}
		c.fill()
	}
	return c.buf[c.pos]
}

func (c *cursor) next() *job {
	j := c.peek()
	if j != nil {
		c.pos++
	}
	return j
}

func (c *cursor) fill() {
	c.buf, c.pos = c.buf[:0], 0
	visit := func(j *job) bool {
		if c.pivot != nil && jobCmp(j, c.pivot) <= 0 {
			return true
		}
		c.buf = append(c.buf, j)
		return len(c.buf) < chunk
	}
	if c.pivot == nil {
		c.snap.Ascend(visit)
	} else {
		c.snap.AscendGreaterOrEqual(c.pivot, visit)
	}
	if len(c.buf) < chunk {
		c.done = true
	}
	if n := len(c.buf); n > 0 {
		l := c.buf[n-1]
		c.pivot = &job{key: l.key, spec: Job{Submitted: l.spec.Submitted, ID: l.spec.ID}}
	}
}
