package sim

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"
	"time"

	"gpucloud/internal/sched"
	"gpucloud/internal/sim/workload"
	"gpucloud/internal/topology"
)

// scheduler is what the engine asks of internal/sched: exactly the calls the
// control plane makes, so a decision seen in simulation is the decision
// production would take.
type scheduler interface {
	SetQueues(qs []sched.Queue) error
	Submit(j sched.Job) error
	Finish(id string, now time.Time) error
	NodeDown(n topology.NodeID, now time.Time) []sched.Decision
	NodeUp(n topology.NodeID, now time.Time)
	Schedule(now time.Time) []sched.Decision
}

// lossCause is what an interruption's lost GPU time is charged to.
type lossCause uint8

const (
	lossNone lossCause = iota
	lossFailure
	lossPreemption // preemptions and resizes
)

// jobRun is the simulator's side of a job in flight: what is left to do and
// where the current run segment stands.
type jobRun struct {
	id          string
	tenant      int32
	submit      time.Duration
	duration    time.Duration // ideal run time with the full gang
	gpus        int           // full gang
	replicas    int
	checkpoint  time.Duration // 0: never
	preemptible bool

	epoch   uint32 // bumped whenever the job stops, to drop its finish event
	running bool
	started bool

	// The current segment: started at segStart, spends overhead restarting,
	// then progresses at rate seconds of ideal work per second.
	segStart time.Duration
	overhead time.Duration
	alloc    int
	rate     float64
	workLeft float64 // seconds of ideal full-gang work left at segStart

	restartCause lossCause // what the next restart overhead is charged to
	waitSince    time.Duration
	queued       time.Duration
}

// engine is one run of the discrete-event simulation.
type engine struct {
	cfg   Config
	in    Input
	s     scheduler
	epoch time.Time // wall time of simulated offset 0

	q       eventQueue
	src     workload.Source
	next    workload.Job // the pending arrival
	srcDone bool
	now     time.Duration
	err     error

	jobs        map[string]*jobRun
	tenantIdx   map[string]int32
	tenants     []tenantAcc
	nodeGPUsMax int
	fleetGPUs   int

	down           []bool
	downGPUs       int
	repairsPending int
	fail           *failureProcess

	waiting, running, alloc int
	dirty, tickPending      bool
	lastCycle, tickAt       time.Duration
	placedThisStep          bool
	stuckSince              time.Duration
	stuck                   bool

	// GPU-seconds.
	lastT                                          time.Duration
	allocSec, usefulSec, stretchSec, downSec       float64
	lostSec                                        [3]float64
	jcts, queues                                   []float32
	speedSum                                       float64
	firstSubmit, lastFinish                        time.Duration
	anySubmit                                      bool
	placements, optimal, multiPlacements, multiOpt int
	res                                            Result
	util, qlen                                     series
	events, cycles, steps                          int64
	prog                                           *progress

	// observe, when set (tests), is called after each simulated instant,
	// and trace with each event.
	observe func(now time.Duration)
	trace   func(ev event)
}

type tenantAcc struct {
	name, queue                string
	completed                  int
	jct, queued, gpuSec, speed float64
}

// errStuck ends a run whose waiting jobs the scheduler will not place on
// an idle, healthy fleet.
var errStuck = errors.New("stuck")

// stuckAfter is how long an idle, healthy fleet may leave jobs waiting
// before the run gives up on them (longer than any back-off).
const stuckAfter = 24 * time.Hour

func newEngine(s scheduler, cfg Config, in Input) (*engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if in.Open == nil {
		return nil, fmt.Errorf("no workload")
	}
	f := cfg.Fabric
	e := &engine{
		cfg: cfg, in: in, s: s, epoch: in.Start, src: in.Open(),
		jobs: map[string]*jobRun{}, tenantIdx: map[string]int32{},
		fleetGPUs: f.NumGPUs(), down: make([]bool, len(f.Nodes)),
		fail: newFailureProcess(cfg.Failures, f, cfg.Seed),
	}
	for i := range f.Classes {
		e.nodeGPUsMax = max(e.nodeGPUsMax, f.Classes[i].GPUs)
	}
	for _, t := range in.Tenants {
		if _, dup := e.tenantIdx[t]; !dup {
			e.tenantIdx[t] = int32(len(e.tenants))
			e.tenants = append(e.tenants, tenantAcc{name: t})
		}
	}
	qs, err := e.queueTree()
	if err != nil {
		return nil, err
	}
	if err := s.SetQueues(qs); err != nil {
		return nil, fmt.Errorf("queues: %w", err)
	}
	e.res = Result{Policy: cfg.Policy, Workload: in.Name, Fabric: f.Name, GPUs: e.fleetGPUs}
	if cfg.Progress != nil {
		e.prog = newProgress(cfg.Progress, cfg.Label, in.Jobs)
	}
	return e, nil
}

// queueTree builds the scheduler's queue tree and says which queue each
// tenant's jobs go to.
func (e *engine) queueTree() ([]sched.Queue, error) {
	if e.cfg.QueueTree != nil {
		qs := resolveQueues(e.cfg.QueueTree, e.fleetGPUs)
		leaf := map[string]bool{}
		for _, q := range qs {
			leaf[q.Name] = true
		}
		for _, q := range qs {
			delete(leaf, q.Parent)
		}
		var missing []string
		for i := range e.tenants {
			t := &e.tenants[i]
			switch {
			case leaf[t.name]:
				t.queue = t.name
			case leaf[sched.DefaultQueue]:
				t.queue = sched.DefaultQueue
			default:
				missing = append(missing, t.name)
			}
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("queues: tenants %s have no leaf queue of their name, and there is no leaf queue %q for them",
				strings.Join(missing, ", "), sched.DefaultQueue)
		}
		return qs, nil
	}
	if e.cfg.Queues == QueuesShared {
		for i := range e.tenants {
			e.tenants[i].queue = sched.DefaultQueue
		}
		return nil, nil // the scheduler's one queue, guaranteed the whole fleet
	}
	share := e.fleetGPUs / max(len(e.tenants), 1)
	qs := make([]sched.Queue, 0, len(e.tenants))
	for i := range e.tenants {
		t := &e.tenants[i]
		t.queue = t.name
		qs = append(qs, sched.Queue{Name: t.name, Guaranteed: share, BorrowLimit: -1, Weight: 1})
	}
	return qs, nil
}

// at is the wall time the scheduler sees for simulated offset d.
func (e *engine) at(d time.Duration) time.Time { return e.epoch.Add(d) }

// run simulates until every job has completed or been refused.
func (e *engine) run() (*Result, error) {
	wall := time.Now()
	e.util.set(0, 0)
	e.qlen.set(0, 0)
	e.pullArrival()
	if e.fail != nil {
		e.pushFailure()
	}
	for e.err == nil {
		t, ok := e.q.peek()
		if !ok || (e.cfg.MaxTime > 0 && t > e.cfg.MaxTime) {
			break
		}
		e.advance(t)
		e.placedThisStep = false
		for {
			ev := e.q.pop()
			e.events++
			e.handle(ev)
			if t2, ok := e.q.peek(); !ok || t2 != t || e.err != nil {
				break
			}
		}
		if e.err == nil {
			e.endInstant()
		}
		e.util.set(t, float64(e.alloc)/float64(e.fleetGPUs))
		e.qlen.set(t, float64(e.waiting))
		if e.observe != nil {
			e.observe(t)
		}
		e.steps++
		if e.prog != nil && e.steps&1023 == 0 {
			e.prog.update(e.res.Completed+e.res.NeverFit, t, e.events)
		}
		if e.srcDone && e.waiting == 0 && e.running == 0 {
			break
		}
		if e.checkStuck() {
			break
		}
	}
	if e.err != nil {
		return nil, e.err
	}
	if e.prog != nil {
		e.prog.finish(e.res.Completed+e.res.NeverFit, e.now, e.events)
	}
	return e.result(time.Since(wall)), nil
}

// checkStuck reports whether jobs have waited on an idle, healthy fleet,
// with nothing left to arrive, for longer than any back-off could explain.
func (e *engine) checkStuck() bool {
	idle := e.srcDone && e.running == 0 && e.waiting > 0 && e.repairsPending == 0 && !e.placedThisStep
	if !idle {
		e.stuck = false
		return false
	}
	if !e.stuck {
		e.stuck, e.stuckSince = true, e.now
	}
	return e.now-e.stuckSince >= stuckAfter
}

// advance moves the clock to t, integrating allocated and failed GPU time.
func (e *engine) advance(t time.Duration) {
	dt := (t - e.lastT).Seconds()
	e.allocSec += float64(e.alloc) * dt
	e.downSec += float64(e.downGPUs) * dt
	e.lastT, e.now = t, t
}

func (e *engine) handle(ev event) {
	if e.trace != nil {
		e.trace(ev)
	}
	switch ev.kind {
	case evArrival:
		e.submit(e.next)
		e.pullArrival()
	case evFinish:
		if j := ev.job; j.running && j.epoch == ev.epoch {
			e.finish(j)
		}
	case evFailure:
		e.failNode(topology.NodeID(ev.node), failureCause(ev.epoch))
		if e.fail != nil {
			e.pushFailure()
		}
	case evRepair:
		e.repairNode(topology.NodeID(ev.node))
	case evTick:
		if !e.tickPending || ev.at != e.tickAt {
			return // superseded by an earlier tick
		}
		e.tickPending = false
		if e.waiting > 0 && e.now-e.lastCycle >= e.cfg.Interval {
			e.dirty = true
		}
	}
}

func (e *engine) pullArrival() {
	j, ok := e.src.Next()
	if !ok {
		e.srcDone = true
		return
	}
	if j.Submit < e.now {
		e.err = fmt.Errorf("workload %s: job %s is submitted at %v, before the previous one (%v): jobs must come in submit order",
			e.in.Name, j.ID, j.Submit, e.now)
		return
	}
	e.next = j
	e.q.push(event{at: j.Submit, kind: evArrival})
}

func (e *engine) pushFailure() {
	at, n, cause := e.fail.draw()
	e.q.push(event{at: at, kind: evFailure, node: int32(n), epoch: uint32(cause)})
}

// endInstant runs the scheduling cycle after the events of an instant when
// something changed, unless the last cycle is closer than MinCycleGap (the
// server's pacing: bursts are handled together), and arms the tick: the
// deferred cycle, or, while jobs wait, a cycle at least every interval
// counted from the last one, whatever caused it.
func (e *engine) endInstant() {
	if e.dirty {
		if gap := e.cfg.MinCycleGap; gap > 0 && e.cycles > 0 && e.now-e.lastCycle < gap {
			e.armTick(e.lastCycle + gap)
		} else {
			e.cycle()
		}
	}
	if e.waiting > 0 {
		at := e.lastCycle + e.cfg.Interval
		if at <= e.now {
			at = e.now + e.cfg.Interval
		}
		e.armTick(at)
	}
}

// armTick makes sure a tick comes at or before at.
func (e *engine) armTick(at time.Duration) {
	if e.tickPending && e.tickAt <= at {
		return
	}
	e.tickAt, e.tickPending = at, true
	e.q.push(event{at: at, kind: evTick})
}

// shape splits a job into replicas: gpus_per_node when the job names it,
// else the largest divisor of its GPUs that fits a node of the fabric (on
// 8-GPU nodes: min(gpus, 8), and 6 for a 12-GPU job).
func (e *engine) shape(j *workload.Job) (replicas, per, minReplicas int) {
	per = j.GPUsPerNode
	if per == 0 {
		per = 1
		for d := min(j.GPUs, e.nodeGPUsMax); d >= 1; d-- {
			if j.GPUs%d == 0 {
				per = d
				break
			}
		}
	}
	replicas = j.GPUs / per
	if j.MinGPUs > 0 {
		minReplicas = (j.MinGPUs + per - 1) / per
	}
	return replicas, per, minReplicas
}

func (e *engine) submit(w workload.Job) {
	e.res.Jobs++
	if !e.anySubmit {
		e.anySubmit, e.firstSubmit = true, e.now
	}
	if err := w.Validate(); err != nil {
		e.err = fmt.Errorf("workload %s: %w", e.in.Name, err)
		return
	}
	if _, dup := e.jobs[w.ID]; dup {
		e.err = fmt.Errorf("workload %s: job id %s submitted twice", e.in.Name, w.ID)
		return
	}
	ti, ok := e.tenantIdx[w.Tenant]
	if !ok {
		e.err = fmt.Errorf("workload %s: job %s names tenant %q, which the workload did not list", e.in.Name, w.ID, w.Tenant)
		return
	}
	replicas, per, minR := e.shape(&w)
	ckpt := w.Checkpoint
	switch {
	case ckpt == 0:
		ckpt = e.cfg.Checkpoint
	case ckpt == workload.NoCheckpoint:
		ckpt = 0
	}
	sj := sched.Job{
		ID: w.ID, Tenant: w.Tenant, Queue: sched.DefaultQueue,
		Replicas: replicas, GPUsPerReplica: per, MinReplicas: minR,
		GPUModel: w.GPUModel, Priority: w.Priority, Preemptible: w.Preemptible,
		Runtime:            time.Duration(float64(w.Duration) * e.cfg.EstimateFactor),
		CheckpointInterval: ckpt,
		Submitted:          e.at(e.now),
	}
	sj.Queue = e.tenants[ti].queue
	if err := e.s.Submit(sj); err != nil {
		e.neverFit(w.ID, err.Error())
		return
	}
	j := &jobRun{
		id: w.ID, tenant: ti, submit: e.now, duration: w.Duration, gpus: w.GPUs, replicas: replicas,
		checkpoint: ckpt, preemptible: w.Preemptible, workLeft: w.Duration.Seconds(), waitSince: e.now,
	}
	e.jobs[w.ID] = j
	e.res.MaxInFlight = max(e.res.MaxInFlight, len(e.jobs))
	e.waiting++
	e.dirty = true
}

func (e *engine) neverFit(id, why string) {
	e.res.NeverFit++
	if len(e.res.NeverFitReasons) < 5 {
		e.res.NeverFitReasons = append(e.res.NeverFitReasons, fmt.Sprintf("%s: %s", id, why))
	}
}

func (e *engine) cycle() {
	e.dirty = false
	e.cycles++
	e.lastCycle = e.now
	for _, d := range e.s.Schedule(e.at(e.now)) {
		e.apply(d, false)
	}
}

// apply carries out one decision of the scheduler. fromFailure says the
// decision answers a node failure: a shrink then loses the work since the
// last checkpoint, where a shrink the scheduler chose is orderly.
func (e *engine) apply(d sched.Decision, fromFailure bool) {
	if e.err != nil {
		return
	}
	j := e.jobs[d.Job]
	if j == nil {
		e.err = fmt.Errorf("scheduler decided %s for job %q, which is not in flight", d.Kind, d.Job)
		return
	}
	needRunning := func(want bool) bool {
		if j.running != want {
			e.err = fmt.Errorf("scheduler decided %s for job %s, which is %s", d.Kind, j.id,
				map[bool]string{true: "running", false: "not running"}[j.running])
			return false
		}
		return true
	}
	switch d.Kind {
	case sched.Place:
		if needRunning(false) && e.checkPlacement(d) {
			e.waiting--
			j.queued += e.now - j.waitSince
			e.start(j, d.Placement)
		}
	case sched.Preempt:
		if needRunning(true) {
			e.res.Preemptions++
			e.stop(j, lossPreemption, false)
			e.requeue(j)
		}
	case sched.Requeue:
		if needRunning(true) {
			e.res.Requeues++
			e.stop(j, lossFailure, false)
			e.requeue(j)
		}
	case sched.Shrink, sched.Grow:
		if needRunning(true) && e.checkPlacement(d) {
			cause := lossPreemption
			if d.Kind == sched.Shrink {
				e.res.Shrinks++
				if fromFailure {
					cause = lossFailure
				}
			} else {
				e.res.Grows++
			}
			e.stop(j, cause, !fromFailure)
			e.start(j, d.Placement)
		}
	case sched.Reject:
		if j.running {
			e.stop(j, lossPreemption, false)
		} else {
			e.waiting--
		}
		delete(e.jobs, j.id)
		e.neverFit(j.id, d.Reason)
	default:
		e.err = fmt.Errorf("scheduler returned decision kind %d for job %s", d.Kind, d.Job)
	}
}

func (e *engine) checkPlacement(d sched.Decision) bool {
	if d.Placement == nil || len(d.Placement.Nodes) == 0 {
		e.err = fmt.Errorf("scheduler decided %s for job %s without a placement", d.Kind, d.Job)
		return false
	}
	return true
}

// start begins a run segment of j on p.
func (e *engine) start(j *jobRun, p *sched.Placement) {
	g := 0
	multiNode := len(p.Nodes) > 1
	for _, na := range p.Nodes {
		g += bits.OnesCount64(na.GPUs)
	}
	placed := p.Replicas
	if placed <= 0 {
		placed = j.replicas * g / j.gpus
	}
	stretch := 1.0
	e.placements++
	if multiNode {
		e.multiPlacements++
	}
	if p.Leaves <= p.MinLeaves {
		e.optimal++
		if multiNode {
			e.multiOpt++
		}
	} else {
		stretch += e.cfg.Slowdown
	}
	j.running = true
	j.epoch++
	j.segStart = e.now
	j.alloc = g
	j.rate = float64(placed) / float64(j.replicas) / stretch
	j.overhead = 0
	if j.started {
		j.overhead = e.cfg.RestartOverhead
	}
	j.started = true
	e.alloc += g
	e.running++
	e.placedThisStep = true
	if j.rate <= 0 {
		e.err = fmt.Errorf("scheduler placed job %s on %d GPUs: no progress possible", j.id, g)
		return
	}
	left := time.Duration(math.Ceil(j.workLeft / j.rate * 1e9))
	e.q.push(event{at: e.now + j.overhead + left, kind: evFinish, job: j, epoch: j.epoch})
}

// stop ends j's current segment now and accounts for its GPU time: the
// progress kept (all of it when orderly, else what the last checkpoint
// saved), the restart overhead spent and the work lost.
func (e *engine) stop(j *jobRun, cause lossCause, orderly bool) {
	el := e.now - j.segStart
	ovh := min(el, j.overhead)
	prog := el - ovh
	saved := time.Duration(0)
	switch {
	case j.checkpoint <= 0:
		// Never checkpoints: everything since the job started is gone, and
		// earlier segments never banked any work.
	case orderly:
		saved = prog
	default:
		// Checkpoints fall every interval from the start of the segment,
		// as the scheduler assumes when it weighs what a preemption costs;
		// one that falls during the restart saves nothing new.
		saved = max(0, el/j.checkpoint*j.checkpoint-j.overhead)
	}
	work := min(saved.Seconds()*j.rate, j.workLeft)
	j.workLeft -= work
	a := float64(j.alloc)
	e.usefulSec += work * float64(j.gpus)
	e.stretchSec += a*saved.Seconds() - work*float64(j.gpus)
	e.lostSec[j.restartCause] += a * ovh.Seconds()
	e.lostSec[cause] += a * (prog - saved).Seconds()
	j.restartCause = cause
	e.alloc -= j.alloc
	j.alloc = 0
	j.running = false
	j.epoch++
	e.running--
	e.dirty = true
}

func (e *engine) requeue(j *jobRun) {
	e.waiting++
	j.waitSince = e.now
}

func (e *engine) finish(j *jobRun) {
	el := e.now - j.segStart
	prog := el - j.overhead
	a := float64(j.alloc)
	work := j.workLeft
	e.usefulSec += work * float64(j.gpus)
	e.stretchSec += a*prog.Seconds() - work*float64(j.gpus)
	e.lostSec[j.restartCause] += a * j.overhead.Seconds()
	e.alloc -= j.alloc
	e.running--
	e.dirty = true
	j.running = false
	delete(e.jobs, j.id)
	if err := e.s.Finish(j.id, e.at(e.now)); err != nil {
		e.err = fmt.Errorf("scheduler refused the finish of job %s: %w", j.id, err)
		return
	}
	jct := (e.now - j.submit).Seconds()
	e.res.Completed++
	e.lastFinish = e.now
	e.jcts = append(e.jcts, float32(jct))
	e.queues = append(e.queues, float32(j.queued.Seconds()))
	speed := j.duration.Seconds() / jct
	e.speedSum += 1 / speed
	t := &e.tenants[j.tenant]
	t.completed++
	t.jct += jct
	t.queued += j.queued.Seconds()
	t.gpuSec += j.duration.Seconds() * float64(j.gpus)
	t.speed += speed
}

func (e *engine) failNode(n topology.NodeID, cause failureCause) {
	if e.down[n] {
		return // in repair already: the draw does not apply
	}
	e.res.Failures++
	if cause == causeGPU {
		e.res.GPUFailures++
	} else {
		e.res.NodeFailures++
	}
	e.down[n] = true
	e.downGPUs += e.cfg.Fabric.NodeGPUs(n)
	e.repairsPending++
	for _, d := range e.s.NodeDown(n, e.at(e.now)) {
		e.apply(d, true)
	}
	e.q.push(event{at: e.now + e.cfg.Failures.Repair, kind: evRepair, node: int32(n)})
	e.dirty = true
}

func (e *engine) repairNode(n topology.NodeID) {
	e.down[n] = false
	e.downGPUs -= e.cfg.Fabric.NodeGPUs(n)
	e.repairsPending--
	e.s.NodeUp(n, e.at(e.now))
	e.dirty = true
}

// result turns the accumulators into the report.
func (e *engine) result(wall time.Duration) *Result {
	r := &e.res
	r.Unfinished = len(e.jobs)
	end := e.lastFinish
	if end < e.firstSubmit {
		end = e.firstSubmit
	}
	r.Makespan = (end - e.firstSubmit).Seconds()
	r.SimulatedH = e.now.Hours()
	jct, q := summarize(e.jcts), summarize(e.queues)
	r.AvgJCT, r.P50JCT, r.P90JCT, r.P99JCT = jct.Mean, jct.P50, jct.P90, jct.P99
	r.AvgQueue, r.P50Queue, r.P99Queue = q.Mean, q.P50, q.P99
	if r.Completed > 0 {
		r.Slowdown = e.speedSum / float64(r.Completed)
	}
	// Utilisation over the makespan: the allocated GPU time of jobs still
	// in flight at the end (unfinished runs) lies beyond it only when the
	// run was cut short, which the unfinished count says.
	if span := r.Makespan * float64(e.fleetGPUs); span > 0 {
		r.Utilization = e.allocSec / span
	}
	if e.allocSec > 0 {
		r.Goodput = e.usefulSec / e.allocSec
	}
	r.Placements = e.placements
	r.LocalityOptimalFrac, r.LocalityOptimalFracMultinode = 1, 1
	if e.placements > 0 {
		r.LocalityOptimalFrac = float64(e.optimal) / float64(e.placements)
	}
	if e.multiPlacements > 0 {
		r.LocalityOptimalFracMultinode = float64(e.multiOpt) / float64(e.multiPlacements)
	}
	const h = 3600.0
	r.LostFailureGPUHours = e.lostSec[lossFailure] / h
	r.LostPreemptionGPUHours = e.lostSec[lossPreemption] / h
	r.LostGPUHours = r.LostFailureGPUHours + r.LostPreemptionGPUHours + e.lostSec[lossNone]/h
	r.SlowPlacementGPUHours = e.stretchSec / h
	r.UsefulGPUHours = e.usefulSec / h
	r.AllocatedGPUHours = e.allocSec / h
	r.DownGPUHours = e.downSec / h
	var speeds []float64
	for _, t := range e.tenants {
		if t.completed == 0 {
			continue
		}
		c := float64(t.completed)
		speeds = append(speeds, t.speed/c)
		r.Tenants = append(r.Tenants, TenantResult{Name: t.name, Completed: t.completed, AvgJCT: t.jct / c,
			AvgQueue: t.queued / c, GPUHours: t.gpuSec / h, Speed: t.speed / c})
	}
	r.JainFairness = jain(speeds)
	r.Cycles, r.Events = e.cycles, e.events
	r.WallS = wall.Seconds()
	if r.WallS > 0 {
		r.EventsPerS = float64(r.Events) / r.WallS
	}
	r.JCTs = e.jcts
	r.Utilisation = e.util.points(e.now)
	r.QueueLength = e.qlen.points(e.now)
	return r
}
