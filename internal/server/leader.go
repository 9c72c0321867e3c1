package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"gpucloud/internal/api"
	"gpucloud/internal/sched"
	"gpucloud/internal/store"
	"gpucloud/internal/topology"
)

// newCore makes the scheduler for a fabric.
var newCore = func(f *topology.Fabric) (core, error) {
	return sched.New(f, sched.DefaultConfig()), nil
}

// campaign runs for leadership until ctx ends; while this replica leads,
// it runs the scheduling loop. Leadership is an etcd lease (LeaderTTL):
// when the leader dies, its session expires and another replica's
// Campaign returns.
func (s *Server) campaign(ctx context.Context) {
	cli := s.store.Client()
	s.dropStaleCandidacy(ctx)
	for ctx.Err() == nil {
		sess, err := concurrency.NewSession(cli, concurrency.WithTTL(s.cfg.LeaderTTL), concurrency.WithContext(ctx))
		if err != nil {
			s.log.Warn("server: leader session", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		// Where this replica is reached, for the day it leads: followers
		// forward deployment traffic there. It goes with the session.
		if _, err := cli.Put(ctx, store.ReplicasKey+s.cfg.ID, s.cfg.AdvertiseURL, clientv3.WithLease(sess.Lease())); err != nil && ctx.Err() == nil {
			s.log.Warn("server: advertising this replica", "err", err)
		}
		el := concurrency.NewElection(sess, store.LeaderKey)
		if err := el.Campaign(ctx, s.cfg.ID); err != nil {
			sess.Close()
			if ctx.Err() == nil {
				s.log.Warn("server: campaign", "err", err)
				sleep(ctx, 200*time.Millisecond)
			}
			continue
		}
		s.log.Info("server: elected leader", "replica", s.cfg.ID)
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-sess.Done():
				s.log.Warn("server: leader session lost")
			case <-lctx.Done():
			}
			cancel()
		}()
		s.isLeader.Store(true)
		l := &leader{s: s, log: s.log.With("role", "leader"),
			fence: clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())}
		go s.deploy.lead(lctx)
		l.run(lctx)
		s.isLeader.Store(false)
		cancel()
		rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
		el.Resign(rctx)
		rcancel()
		sess.Close()
	}
}

// dropStaleCandidacy revokes the election key a previous run of this very
// replica left (same ID: same host and listen address, so that process is
// gone). A restart after a crash then takes over at once instead of
// waiting LeaderTTL for the dead session to expire.
func (s *Server) dropStaleCandidacy(ctx context.Context) {
	kvs, _, err := s.store.List(ctx, store.LeaderKey)
	if err != nil {
		return
	}
	for _, kv := range kvs {
		if string(kv.Value) == s.cfg.ID && kv.Lease != 0 {
			s.log.Info("server: revoking the election key of this replica's previous run")
			s.store.Do(ctx, func(cctx context.Context) error {
				_, err := s.store.Client().Revoke(cctx, clientv3.LeaseID(kv.Lease))
				return err
			})
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// leader is the scheduling loop and the reconcilers of the elected
// replica. Everything it knows is rebuilt from etcd by resync, which runs
// at election, when the fabric changes, and whenever a write of its own
// loses a compare (the scheduler's snapshot then no longer matches etcd).
type leader struct {
	s     *Server
	log   *slog.Logger
	fence clientv3.Cmp // holds only while this replica's election key is the one that won

	fabric *topology.Fabric
	core   core
	// known is what the scheduler holds of each job, with the latest
	// version this leader wrote (the state may not show it yet).
	known       map[string]*known
	down        map[topology.NodeID]bool // told the scheduler NodeDown
	cordoned    map[string]bool          // cordoned (not draining) nodes, rechecked every cycle
	extra       map[string]bool          // registered nodes added under leaf "local"
	w           *writer                  // the cycle's unwritten changes
	needResync  bool
	lastResync  time.Time
	resyncCost  time.Duration
	lastGC      time.Time
	lastCompact time.Time
	compactRev  int64
	lastReasons time.Time
}

type known struct {
	job         *api.Job
	modRev      int64
	running     bool
	checkpoints int
}

func (l *leader) run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := l.resync(ctx); err != nil {
			if ctx.Err() == nil {
				l.log.Warn("resync failed, retrying", "err", err)
				sleep(ctx, 500*time.Millisecond)
			}
			continue
		}
		break
	}
	tick := time.NewTicker(l.s.cfg.CycleInterval)
	defer tick.Stop()
	last := time.Now()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-l.s.st.kick:
			// Changes wake the loop early, but cycles stay at least half
			// an interval apart so that bursts are handled together.
			sleep(ctx, time.Until(last.Add(l.s.cfg.CycleInterval/2)))
		}
		last = time.Now()
		if err := l.cycle(ctx); err != nil && ctx.Err() == nil {
			l.log.Warn("scheduling cycle", "err", err)
			l.needResync = true
			sleep(ctx, 200*time.Millisecond)
		}
	}
}

// resync rebuilds the scheduler from etcd: the fabric with the registered
// nodes, the queues, the running jobs (Restore), the down nodes (NodeDown)
// and the pending jobs in submission order (Submit).
func (l *leader) resync(ctx context.Context) error {
	s := l.s
	l.s.metrics.resyncs.Inc()
	rev, err := s.store.Revision(ctx)
	if err != nil {
		return err
	}
	if err := s.syncTo(ctx, rev); err != nil {
		return err
	}
	now := time.Now().UTC()
	st := s.st
	st.mu.Lock()
	st.dirtyJobs, st.dirtyNodes, st.dirtyQueues, st.dirtyAll = map[string]bool{}, map[string]bool{}, false, false
	var jobs []*jobRec
	for _, rec := range st.jobs {
		if !rec.job.Status.Phase.Terminal() {
			jobs = append(jobs, rec)
		}
	}
	var nodes []*api.Node
	nodeSpec := map[string]api.NodeSpec{}
	for _, n := range st.nodes {
		nodes = append(nodes, n.node)
		nodeSpec[n.node.Metadata.Name] = n.node.Spec
	}
	alive := make(map[string]bool, len(st.alive))
	for n := range st.alive {
		alive[n] = true
	}
	var queues []*api.Queue
	for _, q := range st.queues {
		queues = append(queues, q)
	}
	st.mu.Unlock()

	l.known = map[string]*known{}
	l.down = map[topology.NodeID]bool{}
	l.cordoned = map[string]bool{}
	l.extra = map[string]bool{}
	l.needResync = false
	l.lastResync = time.Now()
	f, err := buildFabric(s.cfg.Fabric, nodes)
	if err != nil {
		return err
	}
	l.fabric = f
	sort.Slice(jobs, func(i, j int) bool { return jobLess(jobs[i].job, jobs[j].job) })
	if f == nil {
		l.core = nil
		for _, rec := range jobs {
			l.known[rec.job.Metadata.ID] = &known{job: rec.job, modRev: rec.modRev, running: rec.job.Status.Phase == api.PhaseRunning}
		}
		l.log.Info("resync: no nodes yet; jobs wait", "jobs", len(jobs))
		return nil
	}
	for _, n := range nodes {
		if s.cfg.Fabric == nil {
			l.extra[n.Metadata.Name] = true
		} else if _, ok := s.cfg.Fabric.NodeByName(n.Metadata.Name); !ok {
			l.extra[n.Metadata.Name] = true
		}
	}
	c, err := newCore(f)
	if err != nil {
		return err
	}
	l.core = c
	l.setQueues(queues)
	var w writer
	l.w = &w
	defer func() { l.w = nil }()
	// Running jobs go back on their placement unless a node of it is dead
	// (then they are requeued here: cheaper than restoring them and
	// letting NodeDown take them off again, which for thousands of dead
	// nodes took seconds). Then the dead nodes go down, and the pending
	// jobs, requeued ones included, are submitted in submission order.
	dead := func(name string) string {
		switch {
		case !alive[name]:
			return "lease expired"
		case nodeSpec[name].Draining:
			return "draining"
		}
		return ""
	}
	var toSubmit []*api.Job
	for _, rec := range jobs {
		j := rec.job
		l.known[j.Metadata.ID] = &known{job: j, modRev: rec.modRev}
		if j.Status.Phase == api.PhasePending {
			toSubmit = append(toSubmit, j)
			continue
		}
		if j.Status.Phase != api.PhaseRunning {
			continue
		}
		reason := ""
		err := errors.New("no placement")
		var p sched.Placement
		if j.Status.Placement != nil {
			if p, err = schedPlacement(f, j.Status.Placement); err == nil {
				for _, na := range p.Nodes {
					if why := dead(f.Nodes[na.Node].Name); why != "" {
						reason = "requeued: node " + f.Nodes[na.Node].Name + " is down (" + why + ")"
						break
					}
				}
				if reason == "" {
					err = c.Restore(schedJob(j), p, j.Status.StartedAt)
				}
			}
		}
		if reason == "" && err != nil {
			l.log.Warn("resync: requeueing a job whose placement cannot be restored", "job", j.Metadata.ID, "err", err)
			reason = "requeued: placement could not be restored after a control-plane restart: " + err.Error()
		}
		if reason != "" {
			c := l.requeue(j, rec.modRev, now, reason, false)
			w.add(c)
			toSubmit = append(toSubmit, c.job)
			continue
		}
		l.known[j.Metadata.ID].running = true
	}
	for i := range f.Nodes {
		id := topology.NodeID(i)
		name := f.Nodes[i].Name
		if nodeSpec[name].Cordoned && !nodeSpec[name].Draining {
			c.Cordon(id, true)
			l.cordoned[name] = true
		}
		if dead(name) != "" {
			w.decisions(l, c.NodeDown(id, now), now)
			l.down[id] = true
		}
	}
	sort.Slice(toSubmit, func(i, j int) bool { return jobLess(toSubmit[i], toSubmit[j]) })
	for _, j := range toSubmit {
		l.submit(&w, j, now)
	}
	// Reports that arrived while no leader looked (or before a lost write)
	// are judged now: nothing else would make these jobs dirty again.
	st.mu.RLock()
	reports := make(map[string]map[string]*api.NodeReport, len(st.reports))
	for id, m := range st.reports {
		reports[id] = m
	}
	st.mu.RUnlock()
	for _, rec := range jobs {
		if k := l.known[rec.job.Metadata.ID]; k != nil && k.running && len(reports[rec.job.Metadata.ID]) > 0 {
			l.judge(&w, rec.job, rec.modRev, reports[rec.job.Metadata.ID], now)
		}
	}
	err = l.flush(ctx, &w)
	l.log.Info("resync", "nodes", len(f.Nodes), "jobs", len(jobs), "down", len(l.down), "writes", len(w.groups), "took", time.Since(l.lastResync).Round(time.Millisecond))
	return err
}

func (l *leader) setQueues(qs []*api.Queue) {
	sqs, warn := schedQueues(qs, l.fabric.NumGPUs())
	if warn != "" {
		l.log.Warn("queues: " + warn)
	}
	if err := l.core.SetQueues(sqs); err != nil {
		l.log.Error("queues refused by the scheduler", "err", err)
	}
}

func jobLess(a, b *api.Job) bool {
	if !a.Status.SubmittedAt.Equal(b.Status.SubmittedAt) {
		return a.Status.SubmittedAt.Before(b.Status.SubmittedAt)
	}
	return a.Metadata.ID < b.Metadata.ID
}

func (l *leader) submit(w *writer, j *api.Job, now time.Time) {
	err := l.core.Submit(schedJob(j))
	var re *sched.RejectError
	switch {
	case errors.As(err, &re):
		nj := copyJob(j)
		nj.Status.Phase = api.PhaseFailed
		nj.Status.Reason = "rejected: " + re.Field + ": " + re.Reason
		nj.Status.FinishedAt = now
		w.add(l.change(nj, api.Event{Type: "Warning", Reason: "Rejected", Message: nj.Status.Reason}))
		delete(l.known, j.Metadata.ID)
	case err != nil:
		// Already known (a duplicate Submit after a lost write): the
		// scheduler has it.
		l.log.Warn("submit", "job", j.Metadata.ID, "err", err)
	default:
		l.known[j.Metadata.ID] = &known{job: j, modRev: j.Metadata.ResourceVersion}
	}
}

// cycle handles what changed since the last one, schedules, and writes
// the decisions.
func (l *leader) cycle(ctx context.Context) error {
	start := time.Now()
	now := start.UTC()
	s := l.s
	st := s.st
	st.mu.Lock()
	jobs, nodes, queuesDirty, all := st.dirtyJobs, st.dirtyNodes, st.dirtyQueues, st.dirtyAll
	st.dirtyJobs, st.dirtyNodes, st.dirtyQueues, st.dirtyAll = map[string]bool{}, map[string]bool{}, false, false
	st.mu.Unlock()
	if all {
		l.needResync = true
	}
	// A node the scheduler's fabric lacks changes the fabric: rebuild, but
	// at most once a second while many agents join.
	if !l.needResync {
		st.mu.RLock()
		for name := range nodes {
			n := st.nodes[name]
			if n == nil && l.extra[name] {
				l.needResync = true // a local node was deleted: shrink the fabric
				break
			}
			if n == nil || len(n.node.Status.Inventory.GPUs) == 0 {
				continue
			}
			if l.fabric == nil {
				l.needResync = true
				break
			}
			if _, ok := l.fabric.NodeByName(name); !ok {
				l.needResync = true
				break
			}
		}
		st.mu.RUnlock()
	}
	if l.needResync {
		// While agents join by thousands, resyncs would follow each other:
		// space them by four times what the last one cost.
		if time.Since(l.lastResync) < max(time.Second, 4*l.resyncCost) {
			// Keep what changed for the cycle after the resync.
			st.mu.Lock()
			st.dirtyAll = true
			st.mu.Unlock()
			return nil
		}
		t := time.Now()
		err := l.resync(ctx)
		l.resyncCost = time.Since(t)
		return err
	}
	if l.core == nil {
		return nil
	}
	var w writer
	l.w = &w
	defer func() { l.w = nil }()
	if queuesDirty {
		st.mu.RLock()
		var qs []*api.Queue
		for _, q := range st.queues {
			qs = append(qs, q)
		}
		st.mu.RUnlock()
		l.setQueues(qs)
	}
	for name := range l.cordoned {
		nodes[name] = true
	}
	for name := range nodes {
		l.reconcileNode(&w, name, now)
	}
	ids := make([]string, 0, len(jobs))
	for id := range jobs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var pending []*api.Job
	for _, id := range ids {
		if j := l.reconcileJob(&w, id, now); j != nil {
			pending = append(pending, j)
		}
	}
	sort.Slice(pending, func(i, j int) bool { return jobLess(pending[i], pending[j]) })
	for _, j := range pending {
		l.submit(&w, j, now)
	}
	ds := l.core.Schedule(now)
	if len(ds) > 0 || len(pending) > 0 {
		l.log.Debug("cycle", "new", len(pending), "decisions", len(ds), "nodes", len(nodes), "took", time.Since(start).Round(time.Millisecond))
	}
	w.decisions(l, ds, now)
	if err := l.flush(ctx, &w); err != nil {
		return err
	}
	l.reasons(ctx)
	if time.Since(l.lastGC) > l.s.cfg.GCInterval {
		l.gc(ctx, now)
	}
	s.metrics.cycle.Observe(time.Since(start).Seconds())
	return nil
}

func (l *leader) reconcileNode(w *writer, name string, now time.Time) {
	if l.fabric == nil {
		return
	}
	id, ok := l.fabric.NodeByName(name)
	if !ok {
		return
	}
	st := l.s.st
	st.mu.RLock()
	n := st.nodes[name]
	_, alive := st.alive[name]
	st.mu.RUnlock()
	wantDown := !alive || n == nil || n.node.Spec.Draining
	// A cordon stops new placements and leaves running gangs alone; a drain
	// (or a lost lease) takes the node down, requeueing its gangs.
	cordoned := n != nil && n.node.Spec.Cordoned && !n.node.Spec.Draining
	if cordoned != l.cordoned[name] {
		l.core.Cordon(id, cordoned)
	}
	if cordoned {
		l.cordoned[name] = true
	} else {
		delete(l.cordoned, name)
	}
	switch {
	case wantDown && !l.down[id]:
		reason := "lease expired"
		switch {
		case alive && n != nil && n.node.Spec.Draining:
			reason = "draining"
		}
		l.down[id] = true
		ds := l.core.NodeDown(id, now)
		w.decisions(l, ds, now)
		w.add(&change{event: &api.Event{Time: now, Type: "Warning", Reason: "NodeDown", Kind: api.KindNode, Name: name,
			Message: fmt.Sprintf("%s; %d gangs affected", reason, len(ds))}})
	case !wantDown && l.down[id]:
		delete(l.down, id)
		l.core.NodeUp(id, now)
		w.add(&change{event: &api.Event{Time: now, Reason: "NodeUp", Kind: api.KindNode, Name: name}})
	}
}

// current is the latest version of a job: what this leader wrote, or what
// the state shows if newer.
func (l *leader) current(id string) (*api.Job, int64, map[string]*api.NodeReport) {
	if l.w != nil {
		if c := l.w.pend[id]; c != nil && c.job != nil {
			l.s.st.mu.RLock()
			reps := l.s.st.reports[id]
			l.s.st.mu.RUnlock()
			return c.job, c.modRev, reps
		}
	}
	st := l.s.st
	st.mu.RLock()
	rec := st.jobs[id]
	reps := st.reports[id]
	st.mu.RUnlock()
	if rec == nil {
		return nil, 0, reps // deleted
	}
	if k := l.known[id]; k != nil && k.modRev > rec.modRev {
		return k.job, k.modRev, reps
	}
	return rec.job, rec.modRev, reps
}

// reconcileJob brings the scheduler in line with a job that changed. It
// returns the job when it is new and pending (to Submit in order).
func (l *leader) reconcileJob(w *writer, id string, now time.Time) *api.Job {
	j, modRev, reps := l.current(id)
	k := l.known[id]
	switch {
	case j == nil:
		if k != nil {
			l.core.Cancel(id)
			delete(l.known, id)
		}
		return nil
	case j.Status.Phase.Terminal():
		if k != nil {
			if k.running {
				l.core.Finish(id, now)
			} else {
				l.core.Cancel(id)
			}
			delete(l.known, id)
			if j.Status.Phase == api.PhaseCancelled && len(reps) > 0 {
				w.add(&change{extra: []clientv3.Op{clientv3.OpDelete(store.ReportsKey+id+"/", clientv3.WithPrefix())}})
			}
		}
		return nil
	case j.Status.Phase == api.PhasePending:
		if k == nil {
			j2 := *j
			j2.Metadata.ResourceVersion = modRev
			return &j2
		}
		return nil
	case j.Status.Phase == api.PhaseRunning:
		if k == nil || !k.running {
			// Running in etcd but not in the scheduler: only a resync can
			// tell who is right.
			l.needResync = true
			return nil
		}
		l.judge(w, j, modRev, reps, now)
	}
	return nil
}

// judge decides a running job's fate from its ranks' reports: all exited
// 0: Succeeded; one failed: restart in place while restarts remain, else
// Failed.
func (l *leader) judge(w *writer, j *api.Job, modRev int64, reps map[string]*api.NodeReport, now time.Time) {
	gen := j.Status.Generation
	exited, checkpoints := 0, 0
	failRank, failCode, failReason, failed := 0, 0, "", false
	for _, rep := range reps {
		if rep.Generation != gen {
			continue
		}
		for rank, rr := range rep.Ranks {
			checkpoints += rr.Checkpoints
			if !rr.Exited {
				continue
			}
			exited++
			if rr.ExitCode != 0 && (!failed || rank < failRank) {
				failed, failRank, failCode, failReason = true, rank, rr.ExitCode, rr.Reason
			}
		}
	}
	if k := l.known[j.Metadata.ID]; k != nil && checkpoints > k.checkpoints {
		// Checkpoints lower the cost of preempting the job.
		k.checkpoints = checkpoints
		l.core.Checkpoint(j.Metadata.ID, now)
	}
	if !failed {
		nodes, err := j.Status.Placement.Expand()
		if err != nil || len(nodes) == 0 || exited < api.BuildAssignments(j, nodes, "")[0].WorldSize {
			return
		}
		nj := copyJob(j)
		nj.Status.Phase, nj.Status.FinishedAt, nj.Status.Reason = api.PhaseSucceeded, now, ""
		c := l.change(nj, api.Event{Time: now, Reason: "Succeeded", Message: fmt.Sprintf("all %d ranks exited 0", exited)})
		c.modRev = modRev
		c.extra = append(c.extra, clientv3.OpDelete(store.ReportsKey+j.Metadata.ID+"/", clientv3.WithPrefix()))
		c.finish = true
		w.add(c)
		return
	}
	msg := fmt.Sprintf("rank %d exited with code %d", failRank, failCode)
	if failReason != "" {
		msg += " (" + failReason + ")"
	}
	nj := copyJob(j)
	c := &change{}
	if j.Status.Restarts < j.Spec.RestartPolicy.MaxRestarts {
		nj.Status.Restarts++
		nj.Status.Generation++
		nj.Status.MasterPort = masterPort(j.Metadata.ID, nj.Status.Generation)
		delay := restartBackoff(nj.Status.Restarts)
		nj.Status.StartedAt = now
		nj.Status.RestartAt = now.Add(delay)
		nj.Status.Reason = msg + fmt.Sprintf("; restart %d of %d in %s", nj.Status.Restarts, j.Spec.RestartPolicy.MaxRestarts, delay)
		c = l.change(nj, api.Event{Time: now, Type: "Warning", Reason: "Restarted", Message: nj.Status.Reason})
	} else {
		nj.Status.Phase, nj.Status.FinishedAt, nj.Status.ExitCode = api.PhaseFailed, now, failCode
		nj.Status.Reason = msg + fmt.Sprintf("; no restarts left (%d)", j.Spec.RestartPolicy.MaxRestarts)
		c = l.change(nj, api.Event{Time: now, Type: "Warning", Reason: "Failed", Message: nj.Status.Reason})
		c.finish = true
	}
	c.modRev = modRev
	c.extra = append(c.extra, clientv3.OpDelete(store.ReportsKey+j.Metadata.ID+"/", clientv3.WithPrefix()))
	w.add(c)
}

func copyJob(j *api.Job) *api.Job {
	nj := *j
	nj.Metadata.ResourceVersion = 0
	return &nj
}

// change is one job's new version (or only an event or extra ops), with
// the compare that guards it.
type change struct {
	job    *api.Job
	modRev int64 // the job's ModRevision it replaces
	event  *api.Event
	extra  []clientv3.Op
	finish bool // tell the scheduler Finish once written
}

func (l *leader) change(nj *api.Job, ev api.Event) *change {
	id := nj.Metadata.ID
	_, modRev, _ := l.current(id)
	ev.Kind, ev.Name, ev.Tenant = api.KindJob, id, nj.Metadata.Tenant
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	return &change{job: nj, modRev: modRev, event: &ev}
}

func (l *leader) requeue(j *api.Job, modRev int64, now time.Time, reason string, preempted bool) *change {
	nj := copyJob(j)
	nj.Status.Phase = api.PhasePending
	nj.Status.Placement = nil
	nj.Status.Requeues++
	nj.Status.Reason = reason
	nj.Status.StartedAt = time.Time{}
	r := "Requeued"
	if preempted {
		r = "Preempted"
	}
	c := l.change(nj, api.Event{Time: now, Type: "Warning", Reason: r, Message: reason})
	c.modRev = modRev
	c.extra = append(c.extra, clientv3.OpDelete(store.ReportsKey+j.Metadata.ID+"/", clientv3.WithPrefix()))
	return c
}

// writer collects changes into groups that must commit together (a
// placement with the preemptions that make room for it). A job changed
// twice before a flush (requeued by NodeDown, then placed again by the
// same cycle's Schedule) is written once, in its latest version: etcd
// refuses a transaction that puts one key twice.
type writer struct {
	groups [][]*change
	pend   map[string]*change // latest unwritten change per job
}

func (w *writer) add(cs ...*change) {
	if len(cs) == 0 {
		return
	}
	if w.pend == nil {
		w.pend = map[string]*change{}
	}
	for _, c := range cs {
		if c.job == nil {
			continue
		}
		id := c.job.Metadata.ID
		if prev := w.pend[id]; prev != nil {
			c.modRev = prev.modRev
			prev.job = nil // superseded; its event and extra ops stay
		}
		w.pend[id] = c
	}
	w.groups = append(w.groups, cs)
}

// decisions turns scheduler decisions into changes.
func (w *writer) decisions(l *leader, ds []sched.Decision, now time.Time) {
	byBeneficiary := map[string][]*change{}
	var order []string
	for _, d := range ds {
		j, modRev, _ := l.current(d.Job)
		if j == nil {
			// Deleted meanwhile (a resync will drop it from the scheduler).
			l.log.Debug("decision for a job etcd no longer has", "job", d.Job, "kind", d.Kind)
			l.needResync = true
			continue
		}
		var c *change
		switch d.Kind {
		case sched.Place, sched.Shrink, sched.Grow:
			nj := copyJob(j)
			nj.Status.Phase = api.PhaseRunning
			nj.Status.Placement = apiPlacement(l.fabric, d.Placement)
			nj.Status.Generation++
			nj.Status.MasterPort = masterPort(j.Metadata.ID, nj.Status.Generation)
			nj.Status.StartedAt = now
			nj.Status.RestartAt = time.Time{}
			nj.Status.Reason = ""
			p := nj.Status.Placement
			msg := fmt.Sprintf("%d GPUs on %d nodes, %d leaves (fewest possible %d): %s", p.GPUs, p.Nodes, p.Leaves, p.MinLeaves, p.LeafNames)
			reason := map[sched.DecisionKind]string{sched.Place: "Scheduled", sched.Shrink: "Shrunk", sched.Grow: "Grown"}[d.Kind]
			c = l.change(nj, api.Event{Time: now, Reason: reason, Message: msg})
			c.modRev = modRev
			if d.Kind == sched.Place {
				l.s.metrics.queueDelay.Observe(now.Sub(j.Status.SubmittedAt).Seconds())
			} else {
				c.extra = append(c.extra, clientv3.OpDelete(store.ReportsKey+j.Metadata.ID+"/", clientv3.WithPrefix()))
			}
		case sched.Preempt:
			c = l.requeue(j, modRev, now, "preempted by "+d.By+reasonSuffix(d.Reason), true)
		case sched.Requeue:
			c = l.requeue(j, modRev, now, "requeued: "+strings.TrimSpace(d.Reason), false)
		case sched.Reject:
			nj := copyJob(j)
			nj.Status.Phase, nj.Status.FinishedAt = api.PhaseFailed, now
			nj.Status.Reason = "rejected: " + d.Reason
			c = l.change(nj, api.Event{Time: now, Type: "Warning", Reason: "Rejected", Message: nj.Status.Reason})
			c.modRev = modRev
		default:
			continue
		}
		l.s.metrics.decisions.WithLabelValues(d.Kind.String()).Inc()
		key := d.Job
		if d.Kind == sched.Preempt && d.By != "" {
			key = d.By
		}
		if _, ok := byBeneficiary[key]; !ok {
			order = append(order, key)
		}
		byBeneficiary[key] = append(byBeneficiary[key], c)
	}
	for _, k := range order {
		w.add(byBeneficiary[k]...)
	}
}

func reasonSuffix(r string) string {
	if r == "" {
		return ""
	}
	return ": " + r
}

// flush writes the groups, packing whole groups into transactions of at
// most TxnOps operations, each guarded by the leadership fence and the
// jobs' revisions. A lost compare means the scheduler's snapshot is wrong:
// resync.
func (l *leader) flush(ctx context.Context, w *writer) error {
	limit := l.s.cfg.TxnOps
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	var batch []*change
	commit := func() error {
		if len(ops) == 0 {
			return nil
		}
		rev, err := l.s.store.Txn(ctx, append([]clientv3.Cmp{l.fence}, cmps...), ops)
		if err != nil {
			if errors.Is(err, store.ErrConflict) {
				l.s.metrics.txnConflicts.Inc()
			}
			l.needResync = true
			return fmt.Errorf("leader write: %w", err)
		}
		l.s.wrote(rev)
		for _, c := range batch {
			if c.job == nil {
				continue
			}
			id := c.job.Metadata.ID
			if c.job.Status.Phase.Terminal() {
				if c.finish {
					l.core.Finish(id, time.Now())
				}
				delete(l.known, id)
				continue
			}
			nj := *c.job
			nj.Metadata.ResourceVersion = rev
			l.known[id] = &known{job: &nj, modRev: rev, running: nj.Status.Phase == api.PhaseRunning}
		}
		cmps, ops, batch = nil, nil, nil
		return nil
	}
	for _, g := range w.groups {
		n := 0
		for _, c := range g {
			n += len(c.extra) + 2
		}
		if len(ops)+n > limit-1 || len(cmps)+len(g) > limit-1 {
			if err := commit(); err != nil {
				return err
			}
		}
		for _, c := range g {
			if c.job != nil {
				key := store.JobsKey + c.job.Metadata.ID
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", c.modRev))
				ops = append(ops, opPut(key, mustJSON(c.job)))
			}
			if c.event != nil {
				ops = append(ops, eventOp(*c.event))
			}
			ops = append(ops, c.extra...)
			batch = append(batch, c)
		}
	}
	w.groups, w.pend = nil, nil
	return commit()
}

// reasons writes why pending jobs wait, a few every half second, when it
// changed. Map order picks which: over time every pending job gets its
// turn. These writes are advisory: a lost compare is ignored.
func (l *leader) reasons(ctx context.Context) {
	if time.Since(l.lastReasons) < 500*time.Millisecond {
		return
	}
	l.lastReasons = time.Now()
	n := 0
	for id, k := range l.known {
		if k.running {
			continue
		}
		if n++; n > 32 {
			return
		}
		j, modRev, _ := l.current(id)
		if j == nil || j.Status.Phase != api.PhasePending {
			continue
		}
		r := l.core.PendingReason(id)
		if r == "" || r == j.Status.Reason {
			continue
		}
		nj := copyJob(j)
		nj.Status.Reason = r
		rev, err := l.s.store.Txn(ctx, []clientv3.Cmp{l.fence, clientv3.Compare(clientv3.ModRevision(store.JobsKey+id), "=", modRev)},
			[]clientv3.Op{opPut(store.JobsKey+id, mustJSON(nj))})
		if err == nil {
			nj.Metadata.ResourceVersion = rev
			l.known[id] = &known{job: nj, modRev: rev}
		}
	}
}

// maxEvents bounds the events kept, whatever their age: at a thousand
// submissions a second an hour of events would not fit in etcd.
const maxEvents = 100000

// gc expires events older than an hour or beyond maxEvents (range deletes:
// keys sort by time), and deletes jobs that finished more than
// JobRetention ago, with their reports and logs.
func (l *leader) gc(ctx context.Context, now time.Time) {
	l.lastGC = time.Now()
	s := l.s
	cutoff := fmt.Sprintf("%s%020d", store.EventsKey, now.Add(-time.Hour).UnixNano())
	s.store.Do(ctx, func(cctx context.Context) error {
		_, err := s.store.Client().Delete(cctx, store.EventsKey, clientv3.WithRange(cutoff))
		return err
	})
	s.store.Do(ctx, func(cctx context.Context) error {
		end := clientv3.GetPrefixRangeEnd(store.EventsKey)
		r, err := s.store.Client().Get(cctx, store.EventsKey, clientv3.WithRange(end), clientv3.WithCountOnly())
		if err != nil || r.Count <= maxEvents {
			return err
		}
		old, err := s.store.Client().Get(cctx, store.EventsKey, clientv3.WithRange(end), clientv3.WithKeysOnly(),
			clientv3.WithLimit(r.Count-maxEvents), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		if err != nil || len(old.Kvs) == 0 {
			return err
		}
		_, err = s.store.Client().Delete(cctx, store.EventsKey, clientv3.WithRange(string(old.Kvs[len(old.Kvs)-1].Key)+"\x00"))
		return err
	})
	// Compact etcd's history to what it was a compaction period ago, as
	// the Kubernetes API server does: an external cluster then needs no
	// compaction settings of its own, and watches keep five minutes.
	if rev, err := s.store.Revision(ctx); err == nil {
		if time.Since(l.lastCompact) >= 5*time.Minute {
			if l.compactRev > 0 {
				s.store.Do(ctx, func(cctx context.Context) error {
					_, err := s.store.Client().Compact(cctx, l.compactRev)
					if err != nil && strings.Contains(err.Error(), "compacted") {
						return nil
					}
					return err
				})
			}
			l.compactRev, l.lastCompact = rev, time.Now()
		}
	}
	if s.cfg.JobRetention <= 0 {
		return
	}
	var expired []string
	s.st.mu.RLock()
	for id, rec := range s.st.jobs {
		if rec.job.Status.Phase.Terminal() && !rec.job.Status.FinishedAt.IsZero() && now.Sub(rec.job.Status.FinishedAt) > s.cfg.JobRetention {
			expired = append(expired, id)
			if len(expired) == 10000 {
				break
			}
		}
	}
	s.st.mu.RUnlock()
	for i := 0; i < len(expired); i += 40 {
		var ops []clientv3.Op
		for _, id := range expired[i:min(i+40, len(expired))] {
			ops = append(ops, clientv3.OpDelete(store.JobsKey+id), clientv3.OpDelete(store.ReportsKey+id+"/", clientv3.WithPrefix()),
				clientv3.OpDelete(store.LogsKey+id+"/", clientv3.WithPrefix()))
		}
		if _, err := s.store.Txn(ctx, []clientv3.Cmp{l.fence}, ops); err != nil {
			l.log.Warn("gc: deleting finished jobs", "err", err)
			return
		}
	}
	if len(expired) > 0 {
		l.log.Info("gc: deleted finished jobs past retention", "jobs", len(expired), "retention", s.cfg.JobRetention)
	}
}
