package sim

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"gpucloud/internal/sched"
	"gpucloud/internal/sim/workload"
	"gpucloud/internal/topology"
)

// fleet generates an ndv5 fleet.
func fleet(t testing.TB, gpus int) *topology.Fabric {
	t.Helper()
	f, err := topology.Generate("ndv5", gpus)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// twoLeaves builds a fabric of two leaf switches with n 8-GPU nodes each.
func twoLeaves(t testing.TB, n int) *topology.Fabric {
	t.Helper()
	b := topology.NewBuilder("two-leaves")
	cls := b.AddClass(topology.NodeClass{Name: "h100", GPUModel: "H100-80GB", GPUs: 8, Rails: 8, RailGbps: 400})
	root, err := b.AddDomain(topology.Domain{Name: "cluster", Level: topology.LevelCluster, Parent: topology.NoDomain, Switches: 8})
	if err != nil {
		t.Fatal(err)
	}
	for l := range 2 {
		leaf, err := b.AddDomain(topology.Domain{Name: fmt.Sprintf("leaf-%d", l), Level: topology.LevelLeaf, Parent: root, Switches: 8})
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if _, err := b.AddNode(fmt.Sprintf("n%d-%d", l, i), cls, leaf); err != nil {
				t.Fatal(err)
			}
		}
	}
	f, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// jobs builds an input from jobs given in submit order.
func jobsInput(js ...workload.Job) Input {
	tr := &workload.Trace{Name: "test", Start: workload.Epoch, Jobs: js}
	return TraceInput(tr)
}

func job(id string, submit, dur time.Duration, gpus int) workload.Job {
	return workload.Job{ID: id, Tenant: "t", Submit: submit, Duration: dur, GPUs: gpus, Preemptible: true}
}

// quiet is a configuration without failures or slowdown.
func quiet(f *topology.Fabric, p Policy) Config {
	c := DefaultConfig(f)
	c.Policy = p
	c.Failures = FailureModel{}
	c.Slowdown = 0
	return c
}

// runWith runs a simulation with hooks for the test: failures injected at
// fixed instants and an observer after every instant.
func runWith(t testing.TB, cfg Config, in Input, inject []event, observe func(e *engine, s *sched.Scheduler, now time.Duration)) *Result {
	t.Helper()
	e, s, err := newRun(cfg, in)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range inject {
		e.q.push(ev)
	}
	if observe != nil {
		e.observe = func(now time.Duration) { observe(e, s, now) }
	}
	r, err := e.run()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestFailureLosesWorkSinceCheckpoint follows one gang through a failure:
// it loses the work since its last checkpoint, waits for the repair, pays
// the restart overhead and finishes late by exactly that much.
func TestFailureLosesWorkSinceCheckpoint(t *testing.T) {
	f := fleet(t, 8) // one node
	cfg := quiet(f, PolicyDefault)
	cfg.Failures = FailureModel{Enabled: true, Repair: time.Hour}
	j := job("a", 0, 10*time.Hour, 8)
	j.Checkpoint = time.Hour
	fail := event{at: 150 * time.Minute, kind: evFailure, node: 0, epoch: uint32(causeGPU)}
	r := runWith(t, cfg, jobsInput(j), []event{fail}, nil)
	// Checkpoints at 1h and 2h; the failure at 2.5h loses 30 minutes; the
	// node is back at 3.5h; 2 minutes of restart, then the 8 hours left.
	wantJCT := (150*time.Minute + time.Hour + cfg.RestartOverhead + 8*time.Hour).Seconds()
	if r.Completed != 1 || r.AvgJCT != wantJCT {
		t.Errorf("completed %d, JCT %v; want 1, %v", r.Completed, r.AvgJCT, wantJCT)
	}
	if r.AvgQueue != 3600 {
		t.Errorf("queued %vs, want the hour of repair", r.AvgQueue)
	}
	wantLost := 8 * (0.5 + cfg.RestartOverhead.Hours())
	if math.Abs(r.LostFailureGPUHours-wantLost) > 1e-9 || r.LostGPUHours != r.LostFailureGPUHours {
		t.Errorf("lost %v GPU-h to failures (%v in all), want %v", r.LostFailureGPUHours, r.LostGPUHours, wantLost)
	}
	if r.Failures != 1 || r.GPUFailures != 1 || r.Requeues != 1 {
		t.Errorf("failures %d (GPU %d), requeues %d; want 1, 1, 1", r.Failures, r.GPUFailures, r.Requeues)
	}
	if math.Abs(r.UsefulGPUHours-80) > 1e-9 {
		t.Errorf("useful %v GPU-h, want 80", r.UsefulGPUHours)
	}
}

// TestSameInstantOrder: a job that finishes at the instant its node fails
// has finished (finishes come before failures), and a job submitted at the
// instant another finishes starts at once (the cycle follows every event
// of the instant).
func TestSameInstantOrder(t *testing.T) {
	f := fleet(t, 8)
	cfg := quiet(f, PolicyFIFO)
	cfg.Failures = FailureModel{Enabled: true, Repair: time.Hour}
	a, b := job("a", 0, time.Hour, 8), job("b", time.Hour, time.Hour, 8)
	fail := event{at: time.Hour, kind: evFailure, node: 0, epoch: uint32(causeNode)}
	var seen []event
	e, _, err := newRun(cfg, jobsInput(a, b))
	if err != nil {
		t.Fatal(err)
	}
	e.q.push(fail)
	e.trace = func(ev event) { seen = append(seen, ev) }
	r, err := e.run()
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(seen); i++ {
		p, c := seen[i-1], seen[i]
		if c.at < p.at || (c.at == p.at && c.kind < p.kind) {
			t.Fatalf("event %d (%v at %v) handled after %v at %v", i, c.kind, c.at, p.kind, p.at)
		}
	}
	if r.Completed != 2 || r.Requeues != 0 || r.LostGPUHours != 0 {
		t.Errorf("completed %d, requeues %d, lost %v: the finish must beat the failure", r.Completed, r.Requeues, r.LostGPUHours)
	}
	// b waits for the repair of the only node: 1h of queueing.
	if want := (2 * time.Hour).Seconds(); r.P99JCT != want {
		t.Errorf("b's JCT %v, want %v", r.P99JCT, want)
	}

	// Without the failure, b starts the instant a finishes.
	r = runWith(t, quiet(f, PolicyFIFO), jobsInput(a, b), nil, nil)
	if r.AvgQueue != 0 || r.Makespan != 7200 {
		t.Errorf("avg queue %v, makespan %v; want 0 and 7200", r.AvgQueue, r.Makespan)
	}
}

// randomJobs is a mixed workload for the invariants below.
func randomJobs(seed uint64, n int, span time.Duration) []workload.Job {
	r := rand.New(rand.NewPCG(seed, 1))
	sizes := []int{1, 1, 1, 2, 4, 8, 8, 16, 32}
	var js []workload.Job
	for i := range n {
		j := workload.Job{
			ID: fmt.Sprintf("j%04d", i), Tenant: fmt.Sprintf("t%d", r.IntN(3)),
			Submit: time.Duration(r.Int64N(int64(span))), Duration: time.Duration(60+r.IntN(4*3600)) * time.Second,
			GPUs: sizes[r.IntN(len(sizes))], Preemptible: r.IntN(4) != 0, Priority: int32(r.IntN(3)),
		}
		if r.IntN(5) == 0 {
			j.Checkpoint = workload.NoCheckpoint
		}
		js = append(js, j)
	}
	js = append(js, workload.Job{ID: "too-big", Tenant: "t0", Submit: span / 2, Duration: time.Hour, GPUs: 1024, Preemptible: true})
	slices.SortStableFunc(js, func(a, b workload.Job) int { return cmp.Compare(a.Submit, b.Submit) })
	return js
}

// allocated counts the GPUs the scheduler's own state holds.
func allocated(s *sched.Scheduler) int {
	st := s.State()
	f := st.Fabric()
	n := 0
	for i := range f.Nodes {
		id := topology.NodeID(i)
		n += f.NodeGPUs(id) - bits.OnesCount64(st.FreeMask(id))
	}
	return n
}

// TestConservation checks that the GPU time the scheduler's state held
// (integrated independently of the simulator's books) equals the sum of the
// jobs' durations times their GPUs, plus the work lost to failures and
// preemptions, plus the stretch of slow placements, for every policy, with
// frequent failures.
func TestConservation(t *testing.T) {
	f := fleet(t, 128)
	in := jobsInput(randomJobs(11, 400, 48*time.Hour)...)
	var sumWork float64
	for _, j := range randomJobs(11, 400, 48*time.Hour) {
		if j.GPUs <= 128 {
			sumWork += j.Duration.Seconds() * float64(j.GPUs)
		}
	}
	for _, p := range Policies {
		for _, slow := range []float64{0, 0.5} {
			t.Run(fmt.Sprintf("%s/slowdown=%v", p, slow), func(t *testing.T) {
				cfg := DefaultConfig(f)
				cfg.Policy = p
				cfg.Slowdown = slow
				cfg.Checkpoint = 20 * time.Minute
				cfg.Failures = Llama3Failures()
				cfg.Failures.GPURate *= 2000 // a failure every few hours on 16 nodes
				cfg.Failures.NodeRate *= 2000
				cfg.Failures.Repair = 90 * time.Minute
				var integral float64
				var last time.Duration
				prev := 0
				r := runWith(t, cfg, in, nil, func(e *engine, s *sched.Scheduler, now time.Duration) {
					integral += float64(prev) * (now - last).Seconds()
					last, prev = now, allocated(s)
					if prev != e.alloc {
						t.Fatalf("at %v the scheduler holds %d GPUs, the simulator thinks %d", now, prev, e.alloc)
					}
				})
				if r.Completed != 400 || r.NeverFit != 1 || r.Unfinished != 0 {
					t.Fatalf("completed %d, never fit %d, unfinished %d", r.Completed, r.NeverFit, r.Unfinished)
				}
				if r.Failures == 0 || r.LostFailureGPUHours == 0 {
					t.Fatalf("no failure hit a job (%d failures): the test lost its point", r.Failures)
				}
				lost := r.LostGPUHours * 3600
				stretch := r.SlowPlacementGPUHours * 3600
				if slow == 0 && stretch != 0 {
					t.Errorf("slow placements cost %v GPU-s without a slowdown", stretch)
				}
				want := sumWork + lost + stretch
				if math.Abs(integral-want) > 1e-6*want {
					t.Errorf("GPU-seconds held %.1f, want durations %.1f + lost %.1f + stretch %.1f = %.1f",
						integral, sumWork, lost, stretch, want)
				}
				if math.Abs(r.AllocatedGPUHours*3600-integral) > 1e-6*integral {
					t.Errorf("the simulator integrated %.1f GPU-s, the scheduler's state %.1f", r.AllocatedGPUHours*3600, integral)
				}
			})
		}
	}
}

// TestDeterminism: the same seed gives the same run, field for field; a
// different seed gives different failures.
func TestDeterminism(t *testing.T) {
	tr := phillySlice(t)
	f := fleet(t, 256)
	cfg := DefaultConfig(f)
	cfg.Failures.GPURate *= 50
	cfg.Failures.NodeRate *= 50
	ignore := cmpopts.IgnoreFields(Result{}, "WallS", "EventsPerS")
	a, err := Run(cfg, TraceInput(tr))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Run(cfg, TraceInput(tr))
	if err != nil {
		t.Fatal(err)
	}
	if d := gocmp.Diff(a, b, ignore); d != "" {
		t.Fatalf("same seed, different runs (-first +second):\n%s", d)
	}
	if a.Failures == 0 {
		t.Fatal("no failures: the test lost its point")
	}
	cfg.Seed = 2
	c, err := Run(cfg, TraceInput(tr))
	if err != nil {
		t.Fatal(err)
	}
	if gocmp.Equal(a, c, ignore) {
		t.Error("seeds 1 and 2 gave the same run")
	}
}

func phillySlice(t testing.TB) *workload.Trace {
	t.Helper()
	tr, err := workload.Load(filepath.Join("testdata", "philly_first2000.csv"), workload.FormatPhilly)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestPhillySlice replays the first 2,000 Philly jobs under every policy:
// every job that fits completes, those that cannot are counted.
func TestPhillySlice(t *testing.T) {
	tr := phillySlice(t)
	f := fleet(t, 256)
	tooBig := 0
	for _, j := range tr.Jobs {
		if j.GPUs > 256 {
			tooBig++
		}
	}
	for _, p := range Policies {
		cfg := DefaultConfig(f)
		cfg.Policy = p
		r, err := Run(cfg, TraceInput(tr))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if r.Jobs != 2000 || r.Completed != 2000-tooBig || r.NeverFit != tooBig || r.Unfinished != 0 {
			t.Errorf("%s: %d jobs, %d completed, %d never fit (want %d), %d unfinished",
				p, r.Jobs, r.Completed, r.NeverFit, tooBig, r.Unfinished)
		}
		if r.P50JCT > r.P99JCT || r.AvgJCT <= 0 || r.Utilization <= 0 || r.Utilization > 1 {
			t.Errorf("%s: implausible metrics %+v", p, r)
		}
	}
}

// TestNeverFit: a job larger than the fleet is counted and the run ends.
func TestNeverFit(t *testing.T) {
	f := fleet(t, 16)
	r := runWith(t, quiet(f, PolicyFIFO), jobsInput(job("big", 0, time.Hour, 32), job("ok", time.Second, time.Hour, 8)), nil, nil)
	if r.NeverFit != 1 || r.Completed != 1 || len(r.NeverFitReasons) != 1 || !strings.Contains(r.NeverFitReasons[0], "big") {
		t.Errorf("never fit %d %q, completed %d", r.NeverFit, r.NeverFitReasons, r.Completed)
	}
}

// TestSlowPlacement: a gang that must straddle two leaves while one leaf
// could hold it on an empty fleet runs (1+slowdown) times as long.
func TestSlowPlacement(t *testing.T) {
	f := twoLeaves(t, 2)
	cfg := quiet(f, PolicyFIFO)
	cfg.Slowdown = 0.5
	// Best fit packs a-long and b-short on leaf 0, c-long and d-short on
	// leaf 1; at 1h the short ones end and leave one node free per leaf.
	js := []workload.Job{
		job("a-long", 0, 100*time.Hour, 8), job("b-short", 1, time.Hour, 8),
		job("c-long", 2, 100*time.Hour, 8), job("d-short", 3, time.Hour, 8),
		job("e-gang", 4, time.Hour, 16),
	}
	r := runWith(t, cfg, jobsInput(js...), nil, nil)
	if r.LocalityOptimalFracMultinode != 0 {
		t.Skipf("the scheduler kept the gang inside one leaf (%.2f optimal): no straddle to measure", r.LocalityOptimalFracMultinode)
	}
	// The gang starts when the short jobs end, at 1h, and runs 1.5h.
	var found bool
	for _, v := range r.JCTs {
		if v == float32((2*time.Hour + 30*time.Minute).Seconds()) {
			found = true
		}
	}
	if !found {
		t.Errorf("no job took 2.5h: JCTs %v", r.JCTs)
	}
	if want := 16 * 0.5; math.Abs(r.SlowPlacementGPUHours-want) > 1e-9 {
		t.Errorf("slow placements cost %v GPU-h, want %v", r.SlowPlacementGPUHours, want)
	}
}

// TestGenericCSVRun replays a user's CSV end to end.
func TestGenericCSVRun(t *testing.T) {
	in := "submit_s,duration_s,gpus,tenant,min_gpus,gpus_per_node\n0,3600,16,a,8,8\n10,600,4,b,,\n20,60,1,a,,\n"
	tr, err := workload.ParseCSV("user.csv", strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	r := runWith(t, quiet(fleet(t, 32), PolicyDefault), TraceInput(tr), nil, nil)
	if r.Completed != 3 || r.AvgQueue != 0 {
		t.Errorf("completed %d, avg queue %v: want 3 and 0 on an idle fleet", r.Completed, r.AvgQueue)
	}
	if len(r.Tenants) != 2 || r.Tenants[0].Name != "a" || r.Tenants[0].Completed != 2 {
		t.Errorf("tenants %+v", r.Tenants)
	}
}

func TestPlots(t *testing.T) {
	tr := phillySlice(t)
	tr.Head(300)
	var rs []*Result
	for _, p := range []Policy{PolicyFIFO, PolicyLAS} {
		cfg := DefaultConfig(fleet(t, 32))
		cfg.Policy = p
		r, err := Run(cfg, TraceInput(tr))
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	dir := t.TempDir()
	files, err := WritePlots(dir, rs)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("wrote %v", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "<svg") || !strings.Contains(string(b), "las") {
			t.Errorf("%s is not an SVG with the runs' legend", f)
		}
	}
}

// TestMinCycleGap: with the server's pacing, a job that arrives 10 s after
// a cycle waits for the next one, 30 s after the last; a cycle still
// follows every change eventually.
func TestMinCycleGap(t *testing.T) {
	f := fleet(t, 8)
	cfg := quiet(f, PolicyFIFO)
	cfg.MinCycleGap = 30 * time.Second
	var cycles []time.Duration
	e, _, err := newRun(cfg, jobsInput(job("a", 0, time.Hour, 1), job("b", 10*time.Second, time.Hour, 1),
		job("c", 100*time.Second, time.Hour, 1)))
	if err != nil {
		t.Fatal(err)
	}
	e.observe = func(now time.Duration) {
		if len(cycles) == 0 || e.lastCycle != cycles[len(cycles)-1] {
			cycles = append(cycles, e.lastCycle)
		}
	}
	r, err := e.run()
	if err != nil {
		t.Fatal(err)
	}
	// a starts at 0; b arrives 10 s later and waits for the cycle at 30 s;
	// c arrives 70 s after that cycle and starts at once.
	if want := 20.0 / 3; math.Abs(r.AvgQueue-want) > 1e-9 {
		t.Errorf("avg queue %v s, want %v", r.AvgQueue, want)
	}
	for i := 1; i < len(cycles); i++ {
		if cycles[i]-cycles[i-1] < 30*time.Second {
			t.Errorf("cycles at %v and %v: closer than the gap", cycles[i-1], cycles[i])
		}
	}
	if r.Completed != 3 {
		t.Errorf("completed %d", r.Completed)
	}
}

func TestQueueFile(t *testing.T) {
	specs, err := ParseQueues("q.csv", strings.NewReader("name,parent,guaranteed,borrow_limit,weight\norg,,75%,,\nresearch,org,50%,-1,2\nprod,org,16,0,\ndefault,,25%,,\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := resolveQueues(specs, 64)
	want := []sched.Queue{
		{Name: "org", Guaranteed: 48, BorrowLimit: -1, Weight: 1},
		{Name: "research", Parent: "org", Guaranteed: 32, BorrowLimit: -1, Weight: 2},
		{Name: "prod", Parent: "org", Guaranteed: 16, BorrowLimit: 0, Weight: 1},
		{Name: "default", Guaranteed: 16, BorrowLimit: -1, Weight: 1},
	}
	if d := gocmp.Diff(want, got); d != "" {
		t.Errorf("queues (-want +got):\n%s", d)
	}
	// research and prod jobs go to their leaves, others to default; prod
	// may not borrow, so its 32-GPU job can never run.
	js := []workload.Job{job("r", 0, time.Hour, 8), job("p", 1, time.Hour, 32), job("x", 2, time.Hour, 8)}
	js[0].Tenant, js[1].Tenant, js[2].Tenant = "research", "prod", "someone"
	cfg := quiet(fleet(t, 64), PolicyDefault)
	cfg.QueueTree = specs
	r := runWith(t, cfg, jobsInput(js...), nil, nil)
	if r.Completed != 2 || r.NeverFit != 1 || !strings.Contains(r.NeverFitReasons[0], "prod") {
		t.Errorf("completed %d, never fit %d %q", r.Completed, r.NeverFit, r.NeverFitReasons)
	}
	// Without a default leaf, a tenant without a queue is an error.
	cfg.QueueTree = specs[:3]
	if _, err := Run(cfg, jobsInput(js...)); err == nil || !strings.Contains(err.Error(), "someone") {
		t.Errorf("got %v, want an error naming the tenant without a queue", err)
	}
	for _, tc := range []struct{ in, want string }{
		{"parent\norg\n", "q.csv:1: column name: required"},
		{"name,color\na,red\n", "q.csv:1: column color"},
		{"name,guaranteed\na,lots\n", "q.csv:2: column guaranteed"},
		{"name,guaranteed\na,120%\n", "q.csv:2: column guaranteed"},
		{"name,weight\na,0\n", "q.csv:2: column weight"},
		{"name\na\na\n", "q.csv:3: column name: queue \"a\" already defined on line 2"},
		{"name\n", "no queues"},
	} {
		if _, err := ParseQueues("q.csv", strings.NewReader(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.in, err, tc.want)
		}
	}
}
