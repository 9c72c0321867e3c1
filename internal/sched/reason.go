package sched

import (
	"fmt"
	"time"

	"gpucloud/internal/topology"
)

type waitCode uint8

const (
	wNew           waitCode = iota + 1
	wQuota                  // queue q at its limit: n1 used of n2
	wInQuota                // non-preemptible beyond guarantee: n1 used of n2 guaranteed
	wNoFit                  // no placement: ms
	wBehind                 // strict FIFO: behind job
	wReserved               // holds the reservation: start t (inf: unknown), n1 nodes
	wBackfill               // would delay job's reservation at t
	wNoReservation          // does not fit even with every running job gone
	wBackoff                // preempted at t; may not preempt before t+backoff
	wFleetFull              // behind a reservation, and no GPU is free
)

// wait is why a pending job waits, kept as data and formatted only when
// asked, so a cycle over 10,000 jobs formats nothing.
type wait struct {
	code   waitCode
	q      *queue
	n1, n2 int64
	job    string
	t      time.Time
	inf    bool
	ms     miss
}

// PendingReason says why a job waits, for the API and the dashboard; ""
// for a running job.
func (s *Scheduler) PendingReason(id string) string {
	j := s.jobs[id]
	switch {
	case j == nil:
		return "unknown job"
	case j.state == stateRunning:
		return ""
	}
	r := s.reason(j)
	if b := s.cfg.PreemptBackoff; b > 0 && !j.preemptedAt.IsZero() && s.now.Before(j.preemptedAt.Add(b)) && j.wait.code != wBackoff {
		r += fmt.Sprintf("; preempted at %s, it may preempt others again from %s", j.preemptedAt.UTC().Format(time.RFC3339),
			j.preemptedAt.Add(b).UTC().Format(time.RFC3339))
	}
	return r
}

func (s *Scheduler) reason(j *job) string {
	w := j.wait
	if s.unseen.code != 0 && j.seen < s.cycleNo {
		w = s.unseen
		if w.code == wFleetFull {
			// Say what it lacks, as a cycle that had looked would have.
			c := &cycle{s: s, now: s.now}
			if _, ms := c.find(s.v, j, j.minReplicas(), j.spec.Replicas); ms.need > 0 {
				w = wait{code: wNoFit, ms: ms}
			}
		}
	}
	need := j.minReplicas() * j.spec.GPUsPerReplica
	switch w.code {
	case wQuota:
		return fmt.Sprintf("queue %s is at its limit: it uses %d of at most %d GPUs and the job needs %d", w.q.spec.Name, w.n1, w.n2, need)
	case wInQuota:
		return fmt.Sprintf("non-preemptible, so it runs only within guaranteed quota: queue %s uses %d of its %d guaranteed GPUs and the job needs %d",
			w.q.spec.Name, w.n1, w.n2, need)
	case wNoFit:
		return s.formatMiss(j, w.ms)
	case wBehind:
		return fmt.Sprintf("strict FIFO: waits behind job %s, which cannot start", w.job)
	case wFleetFull:
		return "no free GPU: every GPU is allocated or out of service, and a job ahead holds the reservation"
	case wReserved:
		if w.inf {
			return fmt.Sprintf("first in line: %s reserved; it starts when running jobs without a runtime estimate free them", plural(w.n1, "node"))
		}
		return fmt.Sprintf("first in line: %s reserved, expected start %s", plural(w.n1, "node"), w.t.UTC().Format(time.RFC3339))
	case wBackfill:
		if w.inf {
			return fmt.Sprintf("it would take GPUs reserved for job %s; backfill needs a runtime estimate and room outside the reservation", w.job)
		}
		return fmt.Sprintf("it would delay job %s, reserved to start at %s: backfill needs a runtime estimate ending by then, or room outside the reservation",
			w.job, w.t.UTC().Format(time.RFC3339))
	case wNoReservation:
		down := 0
		for n := range s.t.f.Nodes {
			if s.v.st.Cordoned(topology.NodeID(n)) {
				down++
			}
		}
		return fmt.Sprintf("%s; it would not fit even if every running job ended (%d nodes down or cordoned)", s.formatMiss(j, w.ms), down)
	case wBackoff:
		return fmt.Sprintf("preempted at %s, it may preempt others again from %s", w.t.UTC().Format(time.RFC3339),
			w.t.Add(s.cfg.PreemptBackoff).UTC().Format(time.RFC3339))
	}
	return "waiting for the next scheduling cycle"
}

func (s *Scheduler) formatMiss(j *job, ms miss) string {
	model := ""
	if ms.model != "" {
		model = ms.model + " "
	}
	where := ""
	if ms.dom != topology.NoDomain {
		where = " (" + s.t.f.Domains[ms.dom].Name + ")"
	}
	switch ms.unit {
	case unitGPUs:
		return fmt.Sprintf("no node has %d free %sGPUs (the most free on one node: %d)", ms.need, model, ms.best)
	case unitNodes:
		return fmt.Sprintf("needs %d idle %snodes in one %s; the most in one %s: %d%s", ms.need, model, ms.level, ms.level, ms.best, where)
	case unitReplicas:
		return fmt.Sprintf("needs room for %d replicas of %d %sGPUs in one %s; the most in one %s: %d%s",
			ms.need, j.spec.GPUsPerReplica, model, ms.level, ms.level, ms.best, where)
	}
	return "no room"
}

func plural(n int64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
