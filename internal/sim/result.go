package sim

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is what one run measured. Times are in seconds of simulated time
// unless the name says otherwise.
type Result struct {
	Policy   Policy `json:"policy"`
	Workload string `json:"workload"`
	Fabric   string `json:"fabric"`
	GPUs     int    `json:"gpus"`

	Jobs       int `json:"jobs"`      // jobs submitted
	Completed  int `json:"completed"` // jobs that ran to the end
	NeverFit   int `json:"never_fit"` // refused: they can never run on this fleet
	Unfinished int `json:"unfinished"`
	// NeverFitReasons gives a few of the refusals, for the report.
	NeverFitReasons []string `json:"never_fit_reasons,omitempty"`

	// JCT is submit to completion; queueing is all the time a job spent
	// waiting to be placed (at first and after each preemption or failure).
	AvgJCT     float64 `json:"avg_jct_s"`
	P50JCT     float64 `json:"p50_jct_s"`
	P90JCT     float64 `json:"p90_jct_s"`
	P99JCT     float64 `json:"p99_jct_s"`
	AvgQueue   float64 `json:"avg_queue_s"`
	P50Queue   float64 `json:"p50_queue_s"`
	P99Queue   float64 `json:"p99_queue_s"`
	Makespan   float64 `json:"makespan_s"`
	Slowdown   float64 `json:"avg_slowdown"` // mean of JCT / duration
	SimulatedH float64 `json:"simulated_h"`

	// Utilization is allocated GPU time over the fleet's GPU time during
	// the makespan; Goodput the share of allocated GPU time that advanced
	// jobs at full speed (not lost to failures, preemptions, restarts or
	// slow placements).
	Utilization float64 `json:"utilization"`
	Goodput     float64 `json:"goodput"`
	// LocalityOptimalFrac is the share of placements on the fewest leaf
	// switches that could hold the gang; ...Multinode counts only gangs of
	// more than one node, where the choice exists.
	LocalityOptimalFrac          float64 `json:"locality_optimal_frac"`
	LocalityOptimalFracMultinode float64 `json:"locality_optimal_frac_multinode"`
	Placements                   int     `json:"placements"`

	Preemptions  int `json:"preemptions"`
	Requeues     int `json:"requeues"` // gangs sent back to the queue by a failure
	Shrinks      int `json:"shrinks"`
	Grows        int `json:"grows"`
	Failures     int `json:"failures"` // node interruptions
	GPUFailures  int `json:"gpu_failures"`
	NodeFailures int `json:"node_failures"`

	// Lost GPU time: work since the last checkpoint plus restart overhead.
	LostGPUHours           float64 `json:"lost_gpu_hours"`
	LostFailureGPUHours    float64 `json:"lost_to_failures_gpu_hours"`
	LostPreemptionGPUHours float64 `json:"lost_to_preemption_gpu_hours"`
	SlowPlacementGPUHours  float64 `json:"slow_placement_gpu_hours"`
	UsefulGPUHours         float64 `json:"useful_gpu_hours"`
	AllocatedGPUHours      float64 `json:"allocated_gpu_hours"`
	DownGPUHours           float64 `json:"down_gpu_hours"`

	// JainFairness is Jain's index over tenants of their mean job speed
	// (duration / JCT): 1 when every tenant's jobs fare alike.
	JainFairness float64        `json:"jain_fairness"`
	Tenants      []TenantResult `json:"tenants,omitempty"`

	Cycles      int64   `json:"cycles"`
	Events      int64   `json:"events"`
	WallS       float64 `json:"wall_s"`
	EventsPerS  float64 `json:"events_per_s"`
	MaxInFlight int     `json:"max_in_flight"`

	// For plots; not in JSON.
	JCTs        []float32 `json:"-"` // sorted, seconds
	Utilisation []Point   `json:"-"` // allocated share of the fleet
	QueueLength []Point   `json:"-"` // waiting jobs
}

// TenantResult is one tenant's share of a run.
type TenantResult struct {
	Name      string  `json:"name"`
	Completed int     `json:"completed"`
	AvgJCT    float64 `json:"avg_jct_s"`
	AvgQueue  float64 `json:"avg_queue_s"`
	GPUHours  float64 `json:"gpu_hours"`
	Speed     float64 `json:"mean_speed"` // mean of duration / JCT
}

// WriteTable prints one run as a readable table.
func (r *Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	row("workload", "%s on %s (%d GPUs), policy %s", r.Workload, r.Fabric, r.GPUs, r.Policy)
	row("jobs", "%d submitted, %d completed, %d never fit, %d unfinished", r.Jobs, r.Completed, r.NeverFit, r.Unfinished)
	row("JCT", "avg %s  p50 %s  p90 %s  p99 %s", dur(r.AvgJCT), dur(r.P50JCT), dur(r.P90JCT), dur(r.P99JCT))
	row("queueing", "avg %s  p50 %s  p99 %s", dur(r.AvgQueue), dur(r.P50Queue), dur(r.P99Queue))
	row("makespan", "%s", dur(r.Makespan))
	row("utilization", "%.1f%%  (goodput %.1f%% of allocated GPU time)", 100*r.Utilization, 100*r.Goodput)
	row("locality", "%.1f%% of placements optimal (%.1f%% of multi-node gangs)", 100*r.LocalityOptimalFrac, 100*r.LocalityOptimalFracMultinode)
	row("preemptions", "%d  (requeues %d, shrinks %d, grows %d)", r.Preemptions, r.Requeues, r.Shrinks, r.Grows)
	row("failures", "%d  (%d GPU, %d other)", r.Failures, r.GPUFailures, r.NodeFailures)
	row("lost GPU-hours", "%.0f  (failures %.0f, preemptions %.0f; slow placements cost %.0f more)",
		r.LostGPUHours, r.LostFailureGPUHours, r.LostPreemptionGPUHours, r.SlowPlacementGPUHours)
	row("fairness", "Jain %.3f over %d tenants", r.JainFairness, len(r.Tenants))
	row("speed", "%.2f s wall, %d events, %.0f events/s, %d cycles", r.WallS, r.Events, r.EventsPerS, r.Cycles)
	for i, s := range r.NeverFitReasons {
		row(fmt.Sprintf("never fit #%d", i+1), "%s", s)
	}
	return tw.Flush()
}

// WriteComparison prints several runs side by side, one row per run.
func WriteComparison(w io.Writer, rs []*Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "gpus\tpolicy\tcompleted\tavg JCT\tp50 JCT\tp99 JCT\tavg queue\tp50 queue\tp99 queue\tutil\tgoodput\tpreempt\tlost GPU-h\tJain\twall\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f%%\t%.1f%%\t%d\t%.0f\t%.3f\t%.1fs\t\n",
			r.GPUs, r.Policy, r.Completed, dur(r.AvgJCT), dur(r.P50JCT), dur(r.P99JCT),
			dur(r.AvgQueue), dur(r.P50Queue), dur(r.P99Queue), 100*r.Utilization, 100*r.Goodput,
			r.Preemptions, r.LostGPUHours, r.JainFairness, r.WallS)
	}
	return tw.Flush()
}

// WriteMarkdown prints runs as a Markdown table, for docs.
func WriteMarkdown(w io.Writer, rs []*Result) error {
	var b strings.Builder
	b.WriteString("| GPUs | policy | avg JCT | p50 JCT | p99 JCT | avg queue | p50 queue | p99 queue | util | preemptions | lost GPU-h | Jain |\n")
	b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s | %s | %.1f%% | %d | %.0f | %.3f |\n",
			r.GPUs, r.Policy, dur(r.AvgJCT), dur(r.P50JCT), dur(r.P99JCT),
			dur(r.AvgQueue), dur(r.P50Queue), dur(r.P99Queue), 100*r.Utilization,
			r.Preemptions, r.LostGPUHours, r.JainFairness)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// dur prints seconds compactly: 45s, 12.5m, 3.2h, 4.1d.
func dur(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%.0fs", s)
	case d < time.Hour:
		return fmt.Sprintf("%.1fm", s/60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%.1fh", s/3600)
	}
	return fmt.Sprintf("%.1fd", s/86400)
}
