// Package apibench is the load generator behind `gpucloud bench api`: it
// submits jobs as fast as a pool of clients can, then simulates node
// agents that register and heartbeat on their lease while a probe measures
// the latency of ordinary API reads. Every request is a real HTTP request
// to a running server.
package apibench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
)

// Options configure a run.
type Options struct {
	Servers []string
	Token   string
	// Jobs to submit (0: skip) by Concurrency clients.
	Jobs        int
	Concurrency int
	// Agents to simulate (0: skip), each heartbeating every Interval for
	// Duration after all have registered.
	Agents    int
	Interval  time.Duration
	Duration  time.Duration
	AgentGPUs int
	// ProbeRate is API reads per second during the agents phase.
	ProbeRate int
	// Cleanup cancels and deletes the bench's jobs and nodes afterwards.
	Cleanup bool
	// Progress, when set, receives a line per phase.
	Progress func(format string, args ...any)
}

// Result holds the figures. Latencies are in milliseconds.
type Result struct {
	Servers     []string `json:"servers"`
	CPUs        int      `json:"cpus"`
	Jobs        int      `json:"jobs"`
	Concurrency int      `json:"concurrency"`

	SubmissionsPerS float64 `json:"submissions_per_s"`
	SubmitP50Ms     float64 `json:"submit_p50_ms"`
	SubmitP99Ms     float64 `json:"submit_p99_ms"`
	SubmitErrors    int     `json:"submit_errors"`

	Agents           int     `json:"agents"`
	AgentGPUs        int     `json:"agent_gpus"`
	RegisterPerS     float64 `json:"registrations_per_s"`
	HeartbeatEveryS  float64 `json:"heartbeat_interval_s"`
	HeartbeatsPerS   float64 `json:"heartbeats_per_s"`
	HeartbeatP50Ms   float64 `json:"heartbeat_p50_ms"`
	HeartbeatP99Ms   float64 `json:"heartbeat_p99_ms"`
	HeartbeatErrors  int     `json:"heartbeat_errors"`
	HeartbeatsLate   int     `json:"heartbeats_late"`
	APIP50Ms         float64 `json:"api_p50_ms"`
	APIP99Ms         float64 `json:"api_p99_ms"`
	APIRequests      int     `json:"api_requests"`
	APIErrors        int     `json:"api_errors"`
	AgentsPhaseSecs  float64 `json:"agents_phase_s"`
	SubmitPhaseSecs  float64 `json:"submit_phase_s"`
	CleanupErrors    int     `json:"cleanup_errors,omitempty"`
	CleanupPhaseSecs float64 `json:"cleanup_phase_s,omitempty"`
}

// Run runs the bench.
func Run(ctx context.Context, o Options) (*Result, error) {
	if len(o.Servers) == 0 {
		return nil, errors.New("bench api: --server is required")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.Duration <= 0 {
		o.Duration = 30 * time.Second
	}
	if o.ProbeRate <= 0 {
		o.ProbeRate = 50
	}
	if o.Progress == nil {
		o.Progress = func(string, ...any) {}
	}
	c := client.New(o.Servers, o.Token, client.Options{Timeout: 30 * time.Second})
	c.Retry = 0 // a bench counts failures, it does not hide them
	if _, err := c.Whoami(ctx); err != nil {
		return nil, fmt.Errorf("bench api: %w", err)
	}
	r := &Result{Servers: o.Servers, CPUs: runtime.NumCPU(), Jobs: o.Jobs, Concurrency: o.Concurrency, Agents: o.Agents,
		AgentGPUs: o.AgentGPUs, HeartbeatEveryS: o.Interval.Seconds()}
	run := fmt.Sprintf("%x", time.Now().UnixNano()&0xffffff)
	var ids []string
	if o.Jobs > 0 {
		ids = submissions(ctx, c, o, r, run)
	}
	var nodes []string
	if o.Agents > 0 && ctx.Err() == nil {
		nodes = agents(ctx, c, o, r, run)
	}
	if o.Cleanup {
		cleanup(c, o, r, ids, nodes)
	}
	return r, ctx.Err()
}

func submissions(ctx context.Context, c *client.Client, o Options, r *Result, run string) []string {
	o.Progress("submitting %d jobs with %d clients", o.Jobs, o.Concurrency)
	var next atomic.Int64
	lat := make([][]time.Duration, o.Concurrency)
	ids := make([]string, o.Jobs)
	var errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < o.Concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= o.Jobs {
					return
				}
				j := &api.Job{APIVersion: api.Version, Kind: api.KindJob,
					Metadata: api.ObjectMeta{Name: fmt.Sprintf("bench-%s-%d", run, i), Labels: map[string]string{"gpucloud-bench": run}},
					Spec:     api.JobSpec{Replicas: 1, GPUsPerReplica: 1, Command: []string{"sleep", "60"}, Preemptible: true}}
				t := time.Now()
				out, err := c.Submit(ctx, j)
				lat[w] = append(lat[w], time.Since(t))
				if err != nil {
					errs.Add(1)
					continue
				}
				ids[i] = out.Metadata.ID
			}
		}(w)
	}
	wg.Wait()
	el := time.Since(start)
	all := merge(lat)
	r.SubmitPhaseSecs = el.Seconds()
	r.SubmitErrors = int(errs.Load())
	r.SubmissionsPerS = float64(len(all)-r.SubmitErrors) / el.Seconds()
	r.SubmitP50Ms, r.SubmitP99Ms = pct(all, 0.50), pct(all, 0.99)
	o.Progress("%.0f submissions/s, p99 %.1f ms, %d errors", r.SubmissionsPerS, r.SubmitP99Ms, r.SubmitErrors)
	return ids
}

func registration(name string, gpus int) *api.NodeRegistration {
	reg := &api.NodeRegistration{Name: name, Address: "127.0.0.1", AgentVersion: "bench"}
	for g := 0; g < gpus; g++ {
		reg.Inventory.GPUs = append(reg.Inventory.GPUs, api.GPU{Index: g, UUID: fmt.Sprintf("GPU-%s-%d", name, g), Model: "H100-80GB", MemoryMiB: 81559, Emulated: true})
	}
	return reg
}

func agents(ctx context.Context, c *client.Client, o Options, r *Result, run string) []string {
	names := make([]string, o.Agents)
	for i := range names {
		names[i] = fmt.Sprintf("bench-%s-%05d", run, i)
	}
	// Agents register, o.Concurrency at a time, and each starts
	// heartbeating at once on its own schedule (phases spread over the
	// interval, as real agents' are). The measured phase starts when the
	// last one has registered and lasts Duration.
	o.Progress("registering %d agents", o.Agents)
	type sample struct {
		at  time.Time
		d   time.Duration
		err bool
	}
	hb := make([][]sample, len(names))
	var late atomic.Int64
	var regErrs atomic.Int64
	start := time.Now()
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, o.Concurrency)
	var regs, wg sync.WaitGroup
	for i := range names {
		regs.Add(1)
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			_, err := c.Register(actx, registration(names[i], o.AgentGPUs))
			<-sem
			regs.Done()
			if err != nil {
				regErrs.Add(1)
				return
			}
			due := time.Now().Add(time.Duration(int64(o.Interval) * int64(i) / int64(len(names))))
			for {
				select {
				case <-actx.Done():
					return
				case <-time.After(time.Until(due)):
				}
				if time.Since(due) > o.Interval/2 {
					late.Add(1)
				}
				t := time.Now()
				err := c.Heartbeat(actx, names[i], &api.Heartbeat{})
				if actx.Err() != nil {
					return
				}
				if client.IsCode(err, 410) {
					c.Register(actx, registration(names[i], o.AgentGPUs))
				}
				hb[i] = append(hb[i], sample{t, time.Since(t), err != nil})
				due = due.Add(o.Interval)
			}
		}(i)
	}
	regs.Wait()
	r.RegisterPerS = float64(len(names)) / time.Since(start).Seconds()
	o.Progress("%.0f registrations/s (%d errors); measuring heartbeats every %v for %v", r.RegisterPerS, regErrs.Load(), o.Interval, o.Duration)
	phase := time.Now()
	go func() {
		select {
		case <-time.After(o.Duration):
		case <-ctx.Done():
		}
		cancel()
	}()
	// The probe: ordinary reads at a steady rate while agents heartbeat.
	var probe []time.Duration
	probeErrs := 0
	tick := time.NewTicker(time.Second / time.Duration(o.ProbeRate))
	k := 0
	for done := false; !done; {
		select {
		case <-actx.Done():
			done = true
		case <-tick.C:
			t := time.Now()
			var err error
			switch k % 3 {
			case 0:
				_, err = c.Queues(actx)
			case 1:
				_, err = c.Node(actx, names[k%len(names)])
			case 2:
				_, err = c.Whoami(actx)
			}
			if actx.Err() == nil {
				probe = append(probe, time.Since(t))
				if err != nil {
					probeErrs++
				}
			}
			k++
		}
	}
	tick.Stop()
	wg.Wait()
	el := time.Since(phase)
	var hbs []time.Duration
	hbErrs := 0
	for _, ss := range hb {
		for _, s := range ss {
			if s.at.Before(phase) {
				continue // before everyone registered: not the steady state
			}
			hbs = append(hbs, s.d)
			if s.err {
				hbErrs++
			}
		}
	}
	sort.Slice(hbs, func(i, j int) bool { return hbs[i] < hbs[j] })
	all := merge([][]time.Duration{hbs, probe})
	r.AgentsPhaseSecs = el.Seconds()
	r.HeartbeatsPerS = float64(len(hbs)) / el.Seconds()
	r.HeartbeatP50Ms, r.HeartbeatP99Ms = pct(hbs, 0.5), pct(hbs, 0.99)
	r.HeartbeatErrors = hbErrs
	r.HeartbeatsLate = int(late.Load())
	r.APIRequests = len(all)
	r.APIErrors = hbErrs + probeErrs
	r.APIP50Ms, r.APIP99Ms = pct(all, 0.5), pct(all, 0.99)
	o.Progress("%.0f heartbeats/s, heartbeat p99 %.1f ms, API p99 %.1f ms", r.HeartbeatsPerS, r.HeartbeatP99Ms, r.APIP99Ms)
	return names
}

func cleanup(c *client.Client, o Options, r *Result, ids, nodes []string) {
	ctx := context.Background()
	start := time.Now()
	o.Progress("cleaning up %d jobs and %d nodes", len(ids), len(nodes))
	var jobs []func() error
	for _, id := range ids {
		if id == "" {
			continue
		}
		jobs = append(jobs, func() error {
			if _, err := c.Cancel(ctx, id); err != nil && !client.IsCode(err, 409) {
				return err
			}
			return c.DeleteJob(ctx, id)
		})
	}
	errs := inParallel(o.Concurrency, jobs)
	// Nodes after every job is gone: a node that runs a job is not
	// deleted.
	var dels []func() error
	for _, n := range nodes {
		dels = append(dels, func() error { return c.Do(ctx, "DELETE", "/v1/nodes/"+n, nil, nil) })
	}
	errs += inParallel(o.Concurrency, dels)
	r.CleanupErrors = errs
	r.CleanupPhaseSecs = time.Since(start).Seconds()
}

// inParallel runs fs on n workers and returns how many failed.
func inParallel(n int, fs []func() error) int {
	var errs atomic.Int64
	work := make(chan func() error)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work {
				if f() != nil {
					errs.Add(1)
				}
			}
		}()
	}
	for _, f := range fs {
		work <- f
	}
	close(work)
	wg.Wait()
	return int(errs.Load())
}

func merge(parts [][]time.Duration) []time.Duration {
	var all []time.Duration
	for _, p := range parts {
		all = append(all, p...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return all
}

// pct returns the q-quantile of sorted durations in milliseconds.
func pct(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return float64(sorted[i].Microseconds()) / 1000
}
