package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"gpucloud/internal/sim"
	"gpucloud/internal/sim/workload"
	"gpucloud/internal/topology"
)

func init() { extraCommands = append(extraCommands, newSimCmd) }

type simOptions struct {
	trace, traceFormat string
	maxJobs            int

	synthetic string
	jobs      int
	rate      float64
	load      float64
	gpuDist   string
	tenants   int

	preset, gpus, fabric string
	fabricIn             fabricInput

	policy, compare, queues string
	queueFile               string
	failures                string
	gpuRate, nodeRate       float64
	repair                  time.Duration
	checkpoint, overhead    time.Duration
	interval, minGap        time.Duration
	slowdown, estimate      float64
	maxTime                 time.Duration
	seed                    uint64

	asJSON, markdown bool
	plotDir          string
	progress         string
	cpuProfile       string
}

func newSimCmd() *cobra.Command {
	def := sim.Llama3Failures()
	o := simOptions{}
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Replay a trace or a generated workload on a fleet through the real scheduler",
		Long: `gpucloud sim is the digital twin: a discrete-event simulation that drives
the very scheduler the control plane runs (internal/sched) over a real trace
(the Microsoft Philly job list, or your own CSV) or a generated workload, on
a preset or loaded fabric, with node failures calibrated on Llama 3's
pre-training. It reports job completion and queueing times, utilisation,
goodput, placement locality, preemptions, failures, lost GPU-hours and
fairness, and can compare policies on the same input.

Generic CSV: a header row; required columns submit_s,duration_s,gpus;
optional id,tenant,priority,gpus_per_node,gpu_model,preemptible,min_gpus,
checkpoint_s, in any order. See docs/simulator.md.`,
		Example: `  gpucloud sim --trace ../shared/traces/philly/adaptdl_philly_jobs.csv --trace-format philly \
      --preset ndv5 --gpus 2048 --policy default --json
  gpucloud sim --trace jobs.csv --gpus 1024 --compare fifo,backfill,las,drf,default --plot out/
  gpucloud sim --synthetic llm --jobs 100000 --load 0.8 --gpus 131072 --failures on`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runSim(cmd, &o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.trace, "trace", "", "replay this job list (see --trace-format)")
	f.StringVar(&o.traceFormat, "trace-format", "auto", "philly|csv|auto (philly when the header has num_gpus)")
	f.IntVar(&o.maxJobs, "max-jobs", 0, "replay only the first N jobs in submit order (0: all)")
	f.StringVar(&o.synthetic, "synthetic", "", "generate the workload instead: gavel|llm")
	f.IntVar(&o.jobs, "jobs", 10000, "synthetic: number of jobs")
	f.Float64Var(&o.rate, "rate", 0, "synthetic: Poisson arrival rate in jobs per hour (0: from --load)")
	f.Float64Var(&o.load, "load", 0.8, "synthetic: offered load as a share of the fleet's GPU time, when --rate is 0")
	f.StringVar(&o.gpuDist, "gpu-dist", workload.GavelGPUs.String(), "synthetic: GPU counts of small jobs as GPUS:WEIGHT,...")
	f.IntVar(&o.tenants, "tenants", 8, "synthetic: number of tenants")
	f.StringVar(&o.preset, "preset", "ndv5", "generate the fleet from this preset: "+strings.Join(topology.PresetNames(), "|"))
	f.StringVar(&o.gpus, "gpus", "", "fleet size in GPUs; a list (1024,2048,4096) runs each")
	f.StringVar(&o.fabric, "fabric", "", "load the fleet from FILE instead of a preset")
	o.fabricIn.flags(cmd, "fabric-format")
	f.StringVar(&o.policy, "policy", "default", "scheduling policy: fifo|backfill|las|drf|default")
	f.StringVar(&o.compare, "compare", "", "run several policies on the same input (a list, or all)")
	f.StringVar(&o.queues, "queues", string(sim.QueuesTenant), "tenant: a queue per tenant with an equal guarantee; shared: one queue, fair share between tenants")
	f.StringVar(&o.queueFile, "queue-file", "", "queue tree from a CSV (name,parent,guaranteed,borrow_limit,weight; GPUs or 25%); a tenant's jobs go to the leaf of its name, else to the leaf default")
	f.StringVar(&o.failures, "failures", "on", "node failures: on|off")
	f.Float64Var(&o.gpuRate, "gpu-failure-rate", def.GPURate, "GPU-caused interruptions per GPU-hour (default: Llama 3)")
	f.Float64Var(&o.nodeRate, "node-failure-rate", def.NodeRate, "other interruptions per node-hour (default: Llama 3)")
	f.DurationVar(&o.repair, "repair", def.Repair, "time a failed node is out of service")
	f.DurationVar(&o.checkpoint, "checkpoint", sim.DefaultCheckpoint, "checkpoint interval of jobs that name none (0: never)")
	f.DurationVar(&o.overhead, "restart-overhead", sim.DefaultRestartOverhead, "time a job holds its GPUs before progressing after an interruption")
	f.DurationVar(&o.interval, "interval", sim.DefaultInterval, "period of the scheduling cycle while jobs wait (cycles also follow every event)")
	f.DurationVar(&o.minGap, "min-cycle-gap", 0, "keep event-driven cycles this far apart, as the server does (0: a cycle after every instant with events)")
	f.Float64Var(&o.slowdown, "slowdown", sim.DefaultSlowdown, "a gang on more leaf switches than needed runs (1+slowdown) times as long")
	f.Float64Var(&o.estimate, "estimate-factor", 1, "run time declared to the scheduler, as a multiple of the true duration (0: none)")
	f.DurationVar(&o.maxTime, "max-time", 0, "stop at this simulated time (0: when every job is done)")
	f.Uint64Var(&o.seed, "seed", 1, "seed of the failures and the synthetic workload")
	f.BoolVar(&o.asJSON, "json", false, "print the metrics as JSON")
	f.BoolVar(&o.markdown, "markdown", false, "print the comparison as a Markdown table")
	f.StringVar(&o.plotDir, "plot", "", "write SVG plots (utilisation, queue length, JCT CDF) into DIR")
	f.StringVar(&o.progress, "progress", "auto", "progress bar on stderr: auto (when a terminal)|on|off")
	f.StringVar(&o.cpuProfile, "cpuprofile", "", "write a Go CPU profile of the run to FILE (go tool pprof)")
	return cmd
}

func runSim(cmd *cobra.Command, o *simOptions) error {
	stderr := cmd.ErrOrStderr()
	if o.cpuProfile != "" {
		stop, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	fabrics, err := simFabrics(o)
	if err != nil {
		return err
	}
	policies, err := simPolicies(o)
	if err != nil {
		return err
	}
	queues, err := sim.ParseQueueMode(o.queues)
	if err != nil {
		return err
	}
	var tree []sim.QueueSpec
	if o.queueFile != "" {
		if tree, err = sim.LoadQueues(o.queueFile); err != nil {
			return err
		}
	}
	fm := sim.FailureModel{Enabled: true, GPURate: o.gpuRate, NodeRate: o.nodeRate, Repair: o.repair}
	switch o.failures {
	case "on":
	case "off":
		fm.Enabled = false
	default:
		return fmt.Errorf("--failures must be on or off, got %q", o.failures)
	}
	showProgress, err := progressWanted(o.progress, stderr)
	if err != nil {
		return err
	}

	var results []*sim.Result
	var plotSets [][]*sim.Result
	for _, f := range fabrics {
		in, err := simInput(o, f, stderr)
		if err != nil {
			return err
		}
		var set []*sim.Result
		for _, p := range policies {
			cfg := sim.DefaultConfig(f)
			cfg.Policy = p
			cfg.Queues = queues
			cfg.QueueTree = tree
			cfg.Failures = fm
			cfg.Checkpoint = o.checkpoint
			cfg.RestartOverhead = o.overhead
			cfg.Interval = o.interval
			cfg.MinCycleGap = o.minGap
			cfg.Slowdown = o.slowdown
			cfg.EstimateFactor = o.estimate
			cfg.MaxTime = o.maxTime
			cfg.Seed = o.seed
			if showProgress {
				cfg.Progress = stderr
				cfg.Label = fmt.Sprintf("%s @%d", p, f.NumGPUs())
			}
			r, err := sim.Run(cfg, in)
			if err != nil {
				return fmt.Errorf("%s on %d GPUs: %w", p, f.NumGPUs(), err)
			}
			set = append(set, r)
			results = append(results, r)
		}
		plotSets = append(plotSets, set)
	}

	if o.plotDir != "" {
		for _, set := range plotSets {
			dir := o.plotDir
			if len(plotSets) > 1 {
				dir = fmt.Sprintf("%s/gpus-%d", o.plotDir, set[0].GPUs)
			}
			files, err := sim.WritePlots(dir, set)
			if err != nil {
				return fmt.Errorf("plots: %w", err)
			}
			for _, fl := range files {
				fmt.Fprintf(stderr, "wrote %s\n", fl)
			}
		}
	}
	out := cmd.OutOrStdout()
	switch {
	case o.asJSON && len(results) == 1:
		return writeJSON(out, results[0])
	case o.asJSON:
		return writeJSON(out, results)
	case o.markdown:
		return sim.WriteMarkdown(out, results)
	case len(results) == 1:
		return results[0].WriteTable(out)
	}
	return sim.WriteComparison(out, results)
}

// simFabrics builds the fleets to simulate: the loaded file, or the preset
// at each size of --gpus.
// startCPUProfile profiles the process into path until the returned func
// runs; it is how the simulator's own speed is investigated.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile %s: %w", path, err)
	}
	// A run cut short with Ctrl-C still leaves a readable profile: the
	// slow runs are the ones worth profiling.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-sig:
			pprof.StopCPUProfile()
			f.Close()
			os.Exit(130)
		case <-done:
		}
	}()
	return func() {
		signal.Stop(sig)
		close(done)
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

func simFabrics(o *simOptions) ([]*topology.Fabric, error) {
	if o.fabric != "" {
		if o.gpus != "" {
			return nil, fmt.Errorf("--fabric and --gpus exclude each other: the file gives the fleet")
		}
		f, _, err := o.fabricIn.load(o.fabric)
		if err != nil {
			return nil, err
		}
		return []*topology.Fabric{f}, nil
	}
	if o.gpus == "" {
		return nil, fmt.Errorf("say which fleet: --gpus N (with --preset) or --fabric FILE")
	}
	var fs []*topology.Fabric
	for _, s := range strings.Split(o.gpus, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("--gpus: %q is not a number of GPUs", s)
		}
		f, err := topology.Generate(o.preset, n)
		if err != nil {
			return nil, err
		}
		fs = append(fs, f)
	}
	return fs, nil
}

func simPolicies(o *simOptions) ([]sim.Policy, error) {
	if o.compare == "" {
		p, err := sim.ParsePolicy(o.policy)
		if err != nil {
			return nil, err
		}
		return []sim.Policy{p}, nil
	}
	if o.compare == "all" {
		return sim.Policies, nil
	}
	var ps []sim.Policy
	for _, s := range strings.Split(o.compare, ",") {
		p, err := sim.ParsePolicy(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("--compare: %w", err)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// simInput loads the trace or describes the synthetic workload for fabric
// f (a synthetic rate from --load depends on the fleet size).
func simInput(o *simOptions, f *topology.Fabric, stderr io.Writer) (sim.Input, error) {
	switch {
	case o.trace != "" && o.synthetic != "":
		return sim.Input{}, fmt.Errorf("--trace and --synthetic exclude each other")
	case o.trace != "":
		format, err := traceFormat(o.trace, o.traceFormat)
		if err != nil {
			return sim.Input{}, err
		}
		tr, err := workload.Load(o.trace, format)
		if err != nil {
			return sim.Input{}, err
		}
		for _, w := range tr.Warnings {
			fmt.Fprintln(stderr, "warning:", w)
		}
		tr.Head(o.maxJobs)
		return sim.TraceInput(tr), nil
	case o.synthetic != "":
		mix, err := workload.ParseMix(o.synthetic)
		if err != nil {
			return sim.Input{}, err
		}
		dist, err := workload.ParseDist(o.gpuDist)
		if err != nil {
			return sim.Input{}, err
		}
		s := workload.Synthetic{Mix: mix, Jobs: o.jobs, Rate: o.rate, GPUs: dist, TenantCount: o.tenants,
			MaxGPUs: f.NumGPUs(), Seed: o.seed}
		if s.Rate == 0 {
			if !(o.load > 0) {
				return sim.Input{}, fmt.Errorf("--load must be positive, got %v", o.load)
			}
			s.Rate = s.RateForLoad(o.load, f.NumGPUs())
		}
		if err := s.Validate(); err != nil {
			return sim.Input{}, err
		}
		return sim.SyntheticInput(s), nil
	}
	return sim.Input{}, fmt.Errorf("say what to replay: --trace FILE or --synthetic gavel|llm")
}

// traceFormat resolves --trace-format auto from the file's header.
func traceFormat(path, flag string) (workload.Format, error) {
	if flag != "auto" {
		return workload.ParseFormat(flag)
	}
	fh, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	head, _ := bufio.NewReader(fh).ReadString('\n')
	if strings.Contains(head, "num_gpus") && strings.Contains(head, "timestamp") {
		return workload.FormatPhilly, nil
	}
	return workload.FormatCSV, nil
}

func progressWanted(mode string, w io.Writer) (bool, error) {
	switch mode {
	case "on":
		return true, nil
	case "off":
		return false, nil
	case "auto":
		f, ok := w.(*os.File)
		if !ok {
			return false, nil
		}
		st, err := f.Stat()
		return err == nil && st.Mode()&os.ModeCharDevice != 0, nil
	}
	return false, fmt.Errorf("--progress must be auto, on or off, got %q", mode)
}
