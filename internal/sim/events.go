package sim

import (
	"container/heap"
	"time"
)

// eventKind orders events that fall at the same instant: what frees GPUs
// comes first, so that the scheduling cycle which follows sees the fleet as
// it really is at that instant, then what takes them away, then new demand.
type eventKind uint8

const (
	evFinish  eventKind = iota // a job completes
	evRepair                   // a node comes back from repair
	evFailure                  // a node fails
	evArrival                  // a job is submitted
	evTick                     // the periodic scheduling cycle
	numEventKinds
)

var eventNames = [numEventKinds]string{"finish", "repair", "failure", "arrival", "tick"}

func (k eventKind) String() string {
	if k < numEventKinds {
		return eventNames[k]
	}
	return "event?"
}

// event is one thing that happens at a simulated instant. Events that
// became moot (a finish for a job that was preempted since) are left in the
// queue and dropped when they come out: epoch says which run of the job
// the event belongs to.
type event struct {
	at    time.Duration // simulated time since the start
	seq   uint64        // insertion order: the last tie-breaker
	kind  eventKind
	epoch uint32
	job   *jobRun
	node  int32
}

// eventQueue is a min-heap of events ordered by time, then kind, then
// insertion order, so that a run is the same on every machine and every
// run: nothing depends on map order or on the heap's internal layout.
type eventQueue struct {
	h   eventHeap
	seq uint64
}

func (q *eventQueue) push(e event) {
	e.seq = q.seq
	q.seq++
	heap.Push(&q.h, e)
}

func (q *eventQueue) pop() event { return heap.Pop(&q.h).(event) }

func (q *eventQueue) len() int { return len(q.h) }

// peek returns the time of the next event; ok is false when there is none.
func (q *eventQueue) peek() (time.Duration, bool) {
	if len(q.h) == 0 {
		return 0, false
	}
	return q.h[0].at, true
}

type eventHeap []event

func (h eventHeap) Len() int { return len(h) }

func (h eventHeap) Less(i, j int) bool {
	a, b := &h[i], &h[j]
	if a.at != b.at {
		return a.at < b.at
	}
	if a.kind != b.kind {
		return a.kind < b.kind
	}
	return a.seq < b.seq
}

func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }

func (h *eventHeap) Push(x any) { *h = append(*h, x.(event)) }

func (h *eventHeap) Pop() any {
	old := *h
	n := len(old)
	e := old[n-1]
	old[n-1] = event{} // drop the job pointer for the GC
	*h = old[:n-1]
	return e
}
