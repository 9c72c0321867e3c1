package sched

import (
	"cmp"
	"fmt"
	"math/bits"
	"slices"
	"time"

	"gpucloud/internal/topology"
)

// Scheduler is the scheduler's snapshot: the fabric with its allocations,
// the queue tree with its usage, and the running and pending jobs. Every
// method updates it incrementally; none reads a clock, does I/O or starts a
// goroutine, and no result depends on map order, so the same calls give the
// same decisions byte for byte. It is not safe for concurrent use.
type Scheduler struct {
	cfg  Config
	prof profile
	t    *topo
	v    *view
	pl   *placer
	qt   *queueTree

	jobs    map[string]*job
	pend    []*job
	pendIdx pendIndex // the pending jobs in the policy's order
	// cycleNo counts Schedule calls; unseen is why the jobs the last one
	// did not look at wait (behind a strict head, or a full fleet).
	cycleNo uint64
	unseen  wait
	run     []*job
	ends    endIndex // running jobs with a runtime, by expected end
	res     *standing
	// walkView is the walk's copy of the view, spare a dropped hold view:
	// memory kept for the next reservation.
	walkView, spare *view
	// shapeIDs numbers the full shapes of jobs (from 1), for the views'
	// failure memo; few distinct shapes exist, whatever the job count.
	shapeIDs map[shapeKey]int32
	nodeJobs [][]*job
	// out says why a node takes no new work: outDown (failed) and/or
	// outCordoned (an operator's cordon). The view is cordoned while any
	// reason holds, so a cordoned node that then fails still takes its gangs
	// down, and a repaired node stays out while it is cordoned.
	out     []uint8
	shrunk  map[*job]struct{} // elastic jobs running below their full size
	rejects []Decision        // pending jobs that became impossible, reported by the next Schedule

	now time.Time
	esc *evictScratch // working memory of preemption searches, empty between calls
}

// New returns a scheduler for fabric f with every GPU free and the default
// queue. An unknown cfg.Policy behaves as PolicyDefault (check names with
// ParsePolicy).
func New(f *topology.Fabric, cfg Config) *Scheduler {
	cfg = cfg.withDefaults()
	t := newTopo(f)
	s := &Scheduler{
		cfg:      cfg,
		prof:     profileFor(cfg.Policy),
		t:        t,
		v:        newView(t, topology.NewState(f)),
		pl:       newPlacer(t, cfg.Spread),
		jobs:     map[string]*job{},
		ends:     newEndIndex(),
		pendIdx:  newPendIndex(),
		nodeJobs: make([][]*job, len(f.Nodes)),
		out:      make([]uint8, len(f.Nodes)),
		shrunk:   map[*job]struct{}{},
	}
	s.qt, _ = buildQueues(nil, f.NumGPUs(), len(t.models))
	return s
}

// Config returns the configuration in effect (defaults filled in).
func (s *Scheduler) Config() Config { return s.cfg }

// Fabric returns the fabric scheduled.
func (s *Scheduler) Fabric() *topology.Fabric { return s.t.f }

// State returns the allocation state. Callers must not change it.
func (s *Scheduler) State() *topology.State { return s.v.st }

// Now is the latest time the scheduler was given.
func (s *Scheduler) Now() time.Time { return s.now }

// advance moves the scheduler's clock to now (never backwards), decaying
// past usage on the way.
func (s *Scheduler) advance(now time.Time) {
	if s.now.IsZero() {
		s.now = now
		return
	}
	if now.After(s.now) {
		s.decay(now.Sub(s.now))
		s.now = now
	}
}

// SetQueues replaces the queue tree. It fails, changing nothing, when the
// tree is invalid or a job's queue would no longer be a leaf of it. Pending
// jobs the new quotas can never admit are rejected by the next Schedule;
// running jobs keep running even above new limits. An empty list restores
// the single default queue.
func (s *Scheduler) SetQueues(qs []Queue) error {
	qt, err := buildQueues(qs, s.t.f.NumGPUs(), len(s.t.models))
	if err != nil {
		return err
	}
	s.dropReservation()
	ids := s.sortedIDs(func(*job) bool { return true })
	for _, id := range ids {
		j := s.jobs[id]
		q := qt.byName[j.leaf.spec.Name]
		if q == nil || !q.leaf() {
			return &RejectError{Field: "queues", Reason: fmt.Sprintf("job %q is in queue %q, which the new tree lacks as a leaf queue", id, j.leaf.spec.Name)}
		}
	}
	for _, q := range qt.all {
		if old := s.qt.byName[q.spec.Name]; old != nil {
			copy(q.dec, old.dec)
			if q.leaf() && old.leaf() {
				for _, t := range old.tenants {
					copy(q.tenant(t.name, len(s.t.models)).dec, t.dec)
				}
			}
		}
	}
	s.qt = qt
	for _, id := range ids {
		j := s.jobs[id]
		j.leaf = qt.byName[j.leaf.spec.Name]
		j.ten = j.leaf.tenant(j.spec.Tenant, len(s.t.models))
		if j.state == stateRunning {
			addTo(&j.leaf.running, j, &j.qidx)
			charge(j, int64(j.gpus), j.model)
			continue
		}
		if s.prof.fairShare {
			s.index(j, true) // into the new tree's lanes
		}
		if err := s.quotaCheck(j); err != nil {
			s.dropPending(j)
			s.rejects = append(s.rejects, Decision{Kind: Reject, Job: id, Reason: err.Error()})
		}
	}
	// Running jobs above new limits keep running, as restored jobs do: they
	// are not counted against the limit until they end.
	for _, q := range qt.all {
		if q.limit < 0 || q.cur-q.restored <= q.limit {
			continue
		}
		for _, id := range ids {
			if j := s.jobs[id]; j != nil && j.state == stateRunning && !j.restored && isAncestor(q, j.leaf) {
				j.restored = true
				for a := j.leaf; a != nil; a = a.parent {
					a.restored += int64(j.gpus)
				}
			}
		}
	}
	return nil
}

// Queues lists the queue tree with its usage, sorted by name.
func (s *Scheduler) Queues() []QueueStatus {
	out := make([]QueueStatus, 0, len(s.qt.all))
	for _, q := range s.qt.all {
		st := QueueStatus{Queue: q.spec, Used: int(q.cur)}
		st.Tier, st.Share = s.queueKey(q)
		for _, t := range q.tenants {
			st.Tenants = append(st.Tenants, TenantStatus{Name: t.name, Used: int(t.cur), Share: s.share(t.curM, t.dec)})
		}
		out = append(out, st)
	}
	return out
}

// QueueStatus is a queue with its usage, for the API and dashboard.
type QueueStatus struct {
	Queue
	Used int // GPUs held by running jobs below
	// Tier is 0 while the queue uses less than its guarantee, 1 after;
	// Share orders queues inside a tier (lower goes first).
	Tier    int
	Share   float64
	Tenants []TenantStatus
}

// TenantStatus is a tenant's usage inside a leaf queue.
type TenantStatus struct {
	Name  string
	Used  int
	Share float64 // dominant share, past usage included
}

// Submit queues a job. An invalid job is refused with a *RejectError and
// nothing is queued.
func (s *Scheduler) Submit(spec Job) error {
	j, err := s.newJob(spec)
	if err != nil {
		return err
	}
	j.state = statePending
	j.wait = wait{code: wNew}
	s.jobs[j.spec.ID] = j
	s.enqueue(j)
	return nil
}

func (s *Scheduler) newJob(spec Job) (*job, error) {
	if spec.ID == "" {
		return nil, reject("", "metadata.name", "a job needs an id")
	}
	if _, dup := s.jobs[spec.ID]; dup {
		return nil, reject(spec.ID, "metadata.name", "a job with this id already exists")
	}
	j := &job{spec: spec}
	if err := s.validate(j); err != nil {
		return nil, err
	}
	return j, nil
}

// Cancel removes a pending or running job, freeing its GPUs.
func (s *Scheduler) Cancel(id string) error {
	j := s.jobs[id]
	if j == nil {
		return fmt.Errorf("cancel %q: no such job", id)
	}
	if j.state == stateRunning {
		s.unplace(j)
	} else {
		s.dropPending(j)
	}
	delete(s.jobs, id)
	return nil
}

// Finish records that a running job completed, freeing its GPUs.
func (s *Scheduler) Finish(id string, now time.Time) error {
	j := s.jobs[id]
	if j == nil || j.state != stateRunning {
		return fmt.Errorf("finish %q: no such running job", id)
	}
	s.advance(now)
	s.unplace(j)
	delete(s.jobs, id)
	return nil
}

// Checkpoint records that a running job saved its state at now, which
// makes preempting it cheaper.
func (s *Scheduler) Checkpoint(id string, now time.Time) error {
	j := s.jobs[id]
	if j == nil || j.state != stateRunning {
		return fmt.Errorf("checkpoint %q: no such running job", id)
	}
	s.advance(now)
	if now.After(j.ckpt) {
		j.ckpt = now
	}
	return nil
}

// Restore puts back a job that was running before a control-plane
// restart, on its placement. It fails, changing nothing, when the job is
// invalid or the placement does not fit the fabric, the job or the free
// GPUs. Quotas are not checked: a running job keeps running.
func (s *Scheduler) Restore(spec Job, p Placement, started time.Time) error {
	j, err := s.newJob(spec)
	if err != nil {
		return err
	}
	pl, err := s.checkPlacement(j, &p)
	if err != nil {
		return err
	}
	s.dropReservation()
	s.jobs[j.spec.ID] = j
	j.restored = true
	j.state = stateRunning // not pending: place must not take it off the pending list
	// A cordoned node keeps the gangs it had: take its GPUs with the cordon
	// lifted for the moment, then put it back.
	var held []topology.NodeID
	for _, a := range pl.Nodes {
		if s.out[a.Node] != 0 {
			s.v.cordon(a.Node, false)
			held = append(held, a.Node)
		}
	}
	s.place(j, pl, started)
	for _, n := range held {
		s.v.cordon(n, true)
	}
	return nil
}

func (s *Scheduler) checkPlacement(j *job, p *Placement) (*Placement, error) {
	id, gpr := j.spec.ID, j.spec.GPUsPerReplica
	if p.Replicas < j.minReplicas() || p.Replicas > j.spec.Replicas || p.Replicas%j.m != 0 {
		return nil, reject(id, "placement.replicas", "%d replicas; the job runs with %d to %d in groups of %d", p.Replicas, j.minReplicas(), j.spec.Replicas, j.m)
	}
	if len(p.Nodes) == 0 {
		return nil, reject(id, "placement.nodes", "empty")
	}
	out := clonePlacement(p)
	slices.SortFunc(out.Nodes, func(a, b NodeAlloc) int { return cmp.Compare(a.Node, b.Node) })
	pool := -1
	total := 0
	for i, a := range out.Nodes {
		if a.Node < 0 || int(a.Node) >= len(s.t.f.Nodes) {
			return nil, reject(id, fmt.Sprintf("placement.nodes[%d]", i), "no node %d in the fabric", a.Node)
		}
		name := s.t.f.Nodes[a.Node].Name
		if i > 0 && out.Nodes[i-1].Node == a.Node {
			return nil, reject(id, "placement.nodes", "node %s listed twice", name)
		}
		po := int(s.t.nodePool[a.Node])
		if pool >= 0 && po != pool {
			return nil, reject(id, "placement.nodes", "node %s is of another kind than %s", name, s.t.f.Nodes[out.Nodes[0].Node].Name)
		}
		pool = po
		c := bits.OnesCount64(a.GPUs)
		if a.GPUs&^fullMask(s.t.pools[po].gpus) != 0 || c == 0 || c%gpr != 0 {
			return nil, reject(id, "placement.nodes", "node %s: GPUs %#x are not whole replicas of %d GPUs on a %d-GPU node", name, a.GPUs, gpr, s.t.pools[po].gpus)
		}
		// A cordoned node keeps its running gangs; only a failed one has none.
		if s.out[a.Node]&outDown != 0 {
			return nil, reject(id, "placement.nodes", "node %s is down", name)
		}
		if a.GPUs&^s.v.st.FreeMask(a.Node) != 0 {
			return nil, reject(id, "placement.nodes", "node %s: GPUs %#x are held by another job", name, a.GPUs&^s.v.st.FreeMask(a.Node))
		}
		total += c
	}
	if m := j.spec.GPUModel; m != "" && s.t.pools[pool].model != m {
		return nil, reject(id, "placement.nodes", "nodes have %s GPUs, the job wants %s", s.t.pools[pool].model, m)
	}
	if total != p.Replicas*gpr {
		return nil, reject(id, "placement.nodes", "%d GPUs for %d replicas of %d", total, p.Replicas, gpr)
	}
	leaves := map[topology.DomainID]bool{}
	for _, a := range out.Nodes {
		leaves[s.t.f.Nodes[a.Node].Leaf] = true
	}
	out.Leaves = len(leaves)
	out.MinLeaves = s.t.minLeavesEmpty(pool, gpr, p.Replicas, j.m)
	return out, nil
}

// place starts j on pl: allocation, node index, lists and usage.
func (s *Scheduler) place(j *job, pl *Placement, now time.Time) {
	if err := s.v.allocAll(pl.Nodes); err != nil {
		panic(fmt.Sprintf("sched: placing %s on GPUs that are not free: %v", j.spec.ID, err)) // a bug, never input
	}
	if j.state == statePending {
		s.dequeue(j)
	}
	j.state = stateRunning
	j.pl = pl
	j.model = s.t.pools[s.t.nodePool[pl.Nodes[0].Node]].modelIdx
	j.gpus = placementGPUs(pl)
	j.started, j.runSince, j.ckpt = now, now, time.Time{}
	for _, a := range pl.Nodes {
		s.nodeJobs[a.Node] = append(s.nodeJobs[a.Node], j)
	}
	addTo(&s.run, j, &j.ridx)
	s.ends.add(j)
	s.onPlace(j, pl.Nodes) // after ends.add: it needs the expected end
	addTo(&j.leaf.running, j, &j.qidx)
	charge(j, int64(j.gpus), j.model)
	s.trackShrunk(j)
}

func (s *Scheduler) trackShrunk(j *job) {
	if j.state == stateRunning && j.pl.Replicas < j.spec.Replicas {
		s.shrunk[j] = struct{}{}
	} else {
		delete(s.shrunk, j)
	}
}

// unplace stops a running job: frees its GPUs and takes it off every list.
func (s *Scheduler) unplace(j *job) {
	s.v.releaseAll(j.pl.Nodes)
	charge(j, -int64(j.gpus), j.model)
	s.detach(j)
}

// detach takes a running job whose GPUs are already released off the
// running lists.
func (s *Scheduler) detach(j *job) {
	for _, a := range j.pl.Nodes {
		l := s.nodeJobs[a.Node]
		if i := slices.Index(l, j); i >= 0 {
			l[i] = l[len(l)-1]
			l[len(l)-1] = nil
			s.nodeJobs[a.Node] = l[:len(l)-1]
		}
	}
	removeFrom(&s.run, j, ridx)
	s.ends.remove(j)
	s.onStop(j)
	removeFrom(&j.leaf.running, j, qidx)
	j.attained = j.attainedAt(s.now)
	j.pl, j.gpus = nil, 0
	j.restored = false
	delete(s.shrunk, j)
}

// requeue puts a job that lost its GPUs back in the pending set. It keeps
// its submit time, and so its place in line.
func (s *Scheduler) requeue(j *job) {
	j.state = statePending
	j.wait = wait{code: wNew}
	s.enqueue(j)
}

// enqueue adds j to the pending list and the ordered index, with its
// order key, which stays fixed while it waits.
func (s *Scheduler) enqueue(j *job) {
	if j.sid == 0 {
		k := j.shape(j.spec.Replicas)
		j.sid = s.shapeNo(k)
		if j.pref != nil {
			k.sc = *j.pref
			j.psid = s.shapeNo(k)
		}
	}
	j.key = s.prof.order.key(s, j, s.now)
	j.seen = s.cycleNo
	addTo(&s.pend, j, &j.pidx)
	s.index(j, true)
}

func (s *Scheduler) dequeue(j *job) {
	removeFrom(&s.pend, j, pidx)
	s.index(j, false)
}

// shapeNo is the number of shape k (from 1).
func (s *Scheduler) shapeNo(k shapeKey) int32 {
	if id, ok := s.shapeIDs[k]; ok {
		return id
	}
	if s.shapeIDs == nil {
		s.shapeIDs = map[shapeKey]int32{}
	}
	id := int32(len(s.shapeIDs) + 1)
	s.shapeIDs[k] = id
	return id
}

// index files a pending job (in) or takes it off (!in): in the one ordered
// index without fair share, else in its tenant's lane, with the pending
// counts of its queues.
func (s *Scheduler) index(j *job, in bool) {
	if !s.prof.fairShare {
		if in {
			s.pendIdx.add(j)
		} else {
			s.pendIdx.remove(j)
		}
		return
	}
	d := 1
	if in {
		j.ten.pend.add(j)
	} else {
		j.ten.pend.remove(j)
		d = -1
	}
	for a := j.leaf; a != nil; a = a.parent {
		a.npend += d
	}
}

func (s *Scheduler) dropPending(j *job) {
	if s.res != nil && (s.res.head == j || s.inNone(j)) {
		s.dropReservation()
	}
	s.dequeue(j)
	j.state = 0
	delete(s.jobs, j.spec.ID)
}

func (s *Scheduler) sortedIDs(keep func(*job) bool) []string {
	var ids []string
	for id, j := range s.jobs {
		if keep(j) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// Running lists the running jobs by ID.
func (s *Scheduler) Running() []string {
	return s.sortedIDs(func(j *job) bool { return j.state == stateRunning })
}

// Pending lists the waiting jobs by ID.
func (s *Scheduler) Pending() []string {
	return s.sortedIDs(func(j *job) bool { return j.state == statePending })
}

// NumRunning and NumPending count jobs without listing them.
func (s *Scheduler) NumRunning() int { return len(s.run) }
func (s *Scheduler) NumPending() int { return len(s.pend) }

// Job returns a job's spec as submitted (Queue filled in).
func (s *Scheduler) Job(id string) (Job, bool) {
	j := s.jobs[id]
	if j == nil {
		return Job{}, false
	}
	return j.spec, true
}

// JobPlacement returns where a running job runs.
func (s *Scheduler) JobPlacement(id string) (Placement, bool) {
	j := s.jobs[id]
	if j == nil || j.state != stateRunning {
		return Placement{}, false
	}
	return *clonePlacement(j.pl), true
}

// Attained returns the GPU-seconds a job has received by now.
func (s *Scheduler) Attained(id string, now time.Time) float64 {
	if j := s.jobs[id]; j != nil {
		return j.attainedAt(now)
	}
	return 0
}

// AllocatedGPUs is the number of GPUs held by running jobs.
func (s *Scheduler) AllocatedGPUs() int {
	n := 0
	for _, j := range s.run {
		n += j.gpus
	}
	return n
}
