// Package schedbench measures the scheduler on generated fleets: it builds
// a fabric, fills it to an occupancy with a realistic mix through the
// scheduler itself, churns it, then times placements and a full cycle and
// measures locality and memory. Unlike package sched it reads the clock.
package schedbench

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"time"

	"gpucloud/internal/sched"
	"gpucloud/internal/topology"
)

// minGPUs is the smallest fleet the benchmark runs on.
const minGPUs = 2048

// Options says what to measure.
type Options struct {
	Preset    string
	GPUs      int
	Occupancy float64
	Policy    sched.Policy
	Seed      uint64
	// Samples is how many placements of each kind are timed (default 300);
	// Pending the jobs waiting in the timed cycle (default 10,000), timed
	// Cycles times (default 5); LocalityGangs the multi-node gangs placed
	// one by one for the locality figure (default 400).
	Samples, Pending, Cycles, LocalityGangs int
}

// Result is what `gpucloud bench sched --json` prints.
type Result struct {
	Preset    string  `json:"preset"`
	GPUs      int     `json:"gpus"`
	Nodes     int     `json:"nodes"`
	Policy    string  `json:"policy"`
	Occupancy float64 `json:"occupancy"` // reached
	Running   int     `json:"running_jobs"`

	PlaceGang1024P50us float64 `json:"place_gang1024_p50_us"`
	PlaceGang1024P99us float64 `json:"place_gang1024_p99_us"`
	PlaceSingleP50us   float64 `json:"place_single_p50_us"`
	PlaceSingleP99us   float64 `json:"place_single_p99_us"`
	// The gang and single-GPU samples that found no room (timed anyway).
	PlaceMisses int `json:"place_misses"`

	Cycle10kPendingMs float64 `json:"cycle_10k_pending_ms"` // median of Cycles, wall time
	// Cycle10kPendingCPUMs is the process CPU time of the same cycles
	// (median): what the cycle costs when other processes share the cores.
	Cycle10kPendingCPUMs float64 `json:"cycle_10k_pending_cpu_ms"`
	CyclePending         int     `json:"cycle_pending"`
	CyclePlaced          int     `json:"cycle_placed"`

	// LocalityOptimalFrac is, over the multi-node gangs placed while at
	// least one placement on the fewest leaf switches possible existed, the
	// fraction placed on that many; LocalityAtMinFrac is over all of them.
	LocalityOptimalFrac float64 `json:"locality_optimal_frac"`
	LocalityAtMinFrac   float64 `json:"locality_at_min_frac"`
	LocalityGangs       int     `json:"locality_gangs"`
	LocalityFitting     int     `json:"locality_gangs_fitting"`

	BytesPerGPU float64 `json:"bytes_per_gpu"`
	BuildMs     float64 `json:"build_fill_ms"`
	CPUs        int     `json:"cpus"`
	GoVersion   string  `json:"go"`
}

func (o *Options) defaults() {
	if o.Preset == "" {
		o.Preset = "ndv5"
	}
	if o.Occupancy == 0 {
		o.Occupancy = 0.9
	}
	if o.Samples <= 0 {
		o.Samples = 300
	}
	if o.Pending <= 0 {
		o.Pending = 10000
	}
	if o.Cycles <= 0 {
		o.Cycles = 5
	}
	if o.LocalityGangs <= 0 {
		o.LocalityGangs = 400
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Policy == "" {
		o.Policy = sched.PolicyDefault
	}
}

// Filled is a scheduler holding a fleet at an occupancy.
type Filled struct {
	S   *sched.Scheduler
	Mix *mixer
	Now time.Time
	r   *rand.Rand
}

// Fill builds the fabric and a scheduler, and fills it to the occupancy
// with the mix through Submit and Schedule, then churns it (a twentieth of
// the jobs end and are replaced, five times) so its free space is
// fragmented as a running fleet's is.
func Fill(o Options) (*Filled, error) {
	o.defaults()
	if o.Occupancy < 0 || o.Occupancy > 1 {
		return nil, fmt.Errorf("occupancy must be between 0 and 1, got %v", o.Occupancy)
	}
	f, err := topology.Generate(o.Preset, o.GPUs)
	if err != nil {
		return nil, err
	}
	if f.NumGPUs() < minGPUs {
		return nil, fmt.Errorf("the benchmark places a 1,024-GPU gang at %.0f%% occupancy: it needs a fleet of at least %d GPUs, got %d",
			o.Occupancy*100, minGPUs, f.NumGPUs())
	}
	cfg := sched.ConfigFor(o.Policy)
	s := sched.New(f, cfg)
	fl := &Filled{S: s, Mix: newMixer(o.Seed, f.NodeGPUs(0)), Now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		r: rand.New(rand.NewPCG(o.Seed, 42))}
	target := int(o.Occupancy * float64(f.NumGPUs()))
	fl.topUp(target)
	for range 5 {
		fl.Now = fl.Now.Add(10 * time.Minute)
		run := s.Running()
		for _, i := range fl.r.Perm(len(run))[:len(run)/20] {
			if err := s.Finish(run[i], fl.Now); err != nil {
				return nil, err
			}
		}
		fl.topUp(target)
	}
	return fl, nil
}

// topUp submits jobs of the mix until the allocation reaches target, in
// batches scheduled together, and cancels what could not be placed.
func (fl *Filled) topUp(target int) {
	s := fl.S
	for stuck := 0; stuck < 3; {
		alloc := s.AllocatedGPUs()
		if alloc >= target {
			break
		}
		demand := 0
		for tries := 0; demand < (target-alloc) && tries < 4096; tries++ {
			j := fl.Mix.job(fl.Now)
			if j.Replicas*j.GPUsPerReplica > target-alloc-demand {
				continue
			}
			if s.Submit(j) == nil {
				demand += j.Replicas * j.GPUsPerReplica
			}
		}
		s.Schedule(fl.Now)
		for _, id := range s.Pending() {
			_ = s.Cancel(id)
		}
		if s.AllocatedGPUs() == alloc {
			stuck++
		}
	}
}

// Run measures.
func Run(o Options) (Result, error) {
	o.defaults()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	t0 := time.Now()
	fl, err := Fill(o)
	if err != nil {
		return Result{}, err
	}
	build := time.Since(t0)
	runtime.GC()
	runtime.ReadMemStats(&after)
	s := fl.S
	f := s.Fabric()
	res := Result{Preset: o.Preset, GPUs: f.NumGPUs(), Nodes: len(f.Nodes), Policy: string(o.Policy),
		Occupancy: float64(s.AllocatedGPUs()) / float64(f.NumGPUs()), Running: s.NumRunning(),
		BytesPerGPU: float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(f.NumGPUs()),
		BuildMs:     ms(build), CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}

	gpn := f.NodeGPUs(0)
	gang := sched.Job{ID: "bench-gang", Replicas: 1024 / gpn, GPUsPerReplica: gpn, TPSize: gpn, Preemptible: true}
	single := sched.Job{ID: "bench-single", Replicas: 1, GPUsPerReplica: 1, Preemptible: true}
	var misses int
	res.PlaceGang1024P50us, res.PlaceGang1024P99us, misses = fl.timePlacement(gang, o.Samples)
	res.PlaceMisses += misses
	res.PlaceSingleP50us, res.PlaceSingleP99us, misses = fl.timePlacement(single, o.Samples*3)
	res.PlaceMisses += misses

	res.Cycle10kPendingMs, res.Cycle10kPendingCPUMs, res.CyclePlaced = fl.timeCycle(o.Pending, o.Cycles)
	res.CyclePending = o.Pending

	res.LocalityGangs, res.LocalityFitting, res.LocalityOptimalFrac, res.LocalityAtMinFrac = fl.locality(o.LocalityGangs)
	runtime.KeepAlive(fl)
	return res, nil
}

// timePlacement submits j and runs a cycle, n times, cancelling it after
// each; it returns the median and 99th percentile of Submit+Schedule in
// microseconds and how many times j found no room.
func (fl *Filled) timePlacement(j sched.Job, n int) (p50, p99 float64, misses int) {
	s := fl.S
	var ds []time.Duration
	for i := range n {
		j.ID = fmt.Sprintf("%s-%d", j.ID, i)
		j.Submitted = fl.Now
		t := time.Now()
		if err := s.Submit(j); err != nil {
			return 0, 0, n // the fleet cannot hold j at all
		}
		out := s.Schedule(fl.Now)
		ds = append(ds, time.Since(t))
		if len(out) == 0 || out[len(out)-1].Job != j.ID {
			misses++
		}
		_ = s.Cancel(j.ID)
	}
	return percentile(ds, 0.5), percentile(ds, 0.99), misses
}

// timeCycle times one cycle over pending jobs of the mix on copies of the
// filled scheduler.
func (fl *Filled) timeCycle(pending, cycles int) (wall, cpu float64, placed int) {
	var ds, cs []time.Duration
	for c := range cycles {
		s := fl.S.Clone()
		m := newMixer(uint64(1000+c), s.Fabric().NodeGPUs(0))
		for range pending {
			j := m.job(fl.Now.Add(time.Minute))
			j.ID = "p-" + j.ID
			_ = s.Submit(j)
		}
		runtime.GC()
		c0, t := cpuTime(), time.Now()
		out := s.Schedule(fl.Now.Add(time.Minute))
		ds = append(ds, time.Since(t))
		cs = append(cs, cpuTime()-c0)
		placed = 0
		for _, d := range out {
			if d.Kind == sched.Place {
				placed++
			}
		}
	}
	return ms(percentile(ds, 0.5)), ms(percentile(cs, 0.5)), placed
}

// locality places multi-node gangs of the mix one at a time, with some
// jobs ending in between, and compares the leaf switches each spans with
// the fewest that could hold it; "fitting" gangs are those for which, just
// before the cycle, enough idle nodes existed in that few leaves.
func (fl *Filled) locality(n int) (gangs, fitting int, optimalFrac, atMinFrac float64) {
	s := fl.S.Clone()
	f := s.Fabric()
	st := s.State()
	gpn := f.NodeGPUs(0)
	leafSize := len(f.LeafNodes(f.DomainsAt(topology.LevelLeaf)[0]))
	optimal, atMin := 0, 0
	classes := mix[4:] // the multi-node gangs
	r := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < n; i++ {
		now := fl.Now.Add(time.Duration(i) * time.Minute)
		run := s.Running()
		for _, k := range r.Perm(len(run))[:min(len(run), 3)] {
			_ = s.Finish(run[k], now)
		}
		c := classes[r.IntN(len(classes))]
		j := fl.Mix.of(c, now)
		j.MinReplicas, j.Preferred = 0, 0
		if j.Replicas < 2 {
			j.Replicas = 2
		}
		minLeaves := (j.Replicas + leafSize - 1) / leafSize
		// Could the gang sit on minLeaves leaves right now?
		var idle []int
		for _, l := range f.DomainsAt(topology.LevelLeaf) {
			idle = append(idle, st.Capacity(l, topology.UnitNode))
		}
		slices.Sort(idle)
		slices.Reverse(idle)
		sum := 0
		for _, x := range idle[:minLeaves] {
			sum += x
		}
		canMin := sum >= j.Replicas
		if err := s.Submit(j); err != nil {
			continue
		}
		out := s.Schedule(now)
		p, ok := s.JobPlacement(j.ID)
		if !ok {
			_ = s.Cancel(j.ID)
			i-- // not placed: draw another
			continue
		}
		_ = out
		gangs++
		_ = gpn
		if p.Leaves == minLeaves {
			atMin++
		}
		if canMin {
			fitting++
			if p.Leaves == minLeaves {
				optimal++
			}
		}
	}
	if fitting > 0 {
		optimalFrac = float64(optimal) / float64(fitting)
	}
	if gangs > 0 {
		atMinFrac = float64(atMin) / float64(gangs)
	}
	return gangs, fitting, optimalFrac, atMinFrac
}

func percentile(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q * float64(len(s)-1))
	return float64(s[i].Nanoseconds()) / 1e3
}

func ms(d any) float64 {
	switch v := d.(type) {
	case time.Duration:
		return float64(v.Nanoseconds()) / 1e6
	case float64: // microseconds
		return v / 1e3
	}
	return 0
}
