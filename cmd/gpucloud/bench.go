package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"gpucloud/internal/sched"
	"gpucloud/internal/sched/schedbench"
)

// benchSubcommands are the `gpucloud bench` subcommands; other files add
// theirs (e.g. `bench api`) from an init function.
var benchSubcommands []func() *cobra.Command

func init() {
	extraCommands = append(extraCommands, newBenchCmd)
	benchSubcommands = append(benchSubcommands, newBenchSchedCmd)
}

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure parts of gpucloud on generated fleets",
	}
	for _, add := range benchSubcommands {
		cmd.AddCommand(add())
	}
	return cmd
}

func newBenchSchedCmd() *cobra.Command {
	var o schedbench.Options
	var policy string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "sched",
		Short: "Time the scheduler on a fleet filled with a realistic mix",
		Long: `Builds a preset fleet, fills it to the occupancy with a realistic mix of
jobs through the scheduler itself (then churns it so free space is
fragmented), and measures: placing a 1,024-GPU gang and a 1-GPU job
(Submit plus a scheduling cycle), a full cycle over 10,000 pending jobs,
the locality of multi-node gangs (leaf switches spanned against the
fewest possible) and the memory held per GPU.`,
		Example: `  gpucloud bench sched --preset ndv5 --gpus 131072 --occupancy 0.9
  gpucloud bench sched --gpus 16384 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := sched.ParsePolicy(policy)
			if err != nil {
				return err
			}
			o.Policy = p
			r, err := schedbench.Run(o)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), r)
			}
			printSchedBench(cmd.OutOrStdout(), r)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.Preset, "preset", "ndv5", "fleet preset (see `gpucloud topology gen --help`)")
	cmd.Flags().IntVar(&o.GPUs, "gpus", 131072, "GPUs in the fleet")
	cmd.Flags().Float64Var(&o.Occupancy, "occupancy", 0.9, "fraction of GPUs busy before measuring")
	cmd.Flags().StringVar(&policy, "policy", "default", "scheduling policy: fifo|backfill|las|drf|default")
	cmd.Flags().Uint64Var(&o.Seed, "seed", 1, "seed of the job mix")
	cmd.Flags().IntVar(&o.Samples, "samples", 300, "placements timed per kind")
	cmd.Flags().IntVar(&o.Pending, "pending", 10000, "jobs pending in the timed cycle")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the figures as JSON")
	return cmd
}

func printSchedBench(w io.Writer, r schedbench.Result) {
	fmt.Fprintf(w, "%s fleet: %d GPUs on %d nodes, %.1f%% busy with %d running jobs, policy %s (%d CPUs, %s)\n\n",
		r.Preset, r.GPUs, r.Nodes, 100*r.Occupancy, r.Running, r.Policy, r.CPUs, r.GoVersion)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "measure\tvalue\ttarget\t")
	row := func(name, value, target string, ok bool) {
		mark := "ok"
		if !ok {
			mark = "MISSED"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, value, target, mark)
	}
	row("place a 1,024-GPU gang (median)", fmt.Sprintf("%.1f µs (p99 %.1f)", r.PlaceGang1024P50us, r.PlaceGang1024P99us), "< 1 ms", r.PlaceGang1024P50us < 1000)
	row("place a 1-GPU job (median)", fmt.Sprintf("%.2f µs (p99 %.2f)", r.PlaceSingleP50us, r.PlaceSingleP99us), "< 20 µs", r.PlaceSingleP50us < 20)
	row(fmt.Sprintf("cycle over %d pending jobs", r.CyclePending), fmt.Sprintf("%.1f ms, %.1f ms CPU (%d placed)", r.Cycle10kPendingMs, r.Cycle10kPendingCPUMs, r.CyclePlaced), "< 100 ms", r.Cycle10kPendingMs < 100)
	row("gangs at the fewest leaves, when possible", fmt.Sprintf("%.2f%% of %d", 100*r.LocalityOptimalFrac, r.LocalityFitting), ">= 99%", r.LocalityOptimalFrac >= 0.99)
	row("memory per GPU", fmt.Sprintf("%.0f bytes", r.BytesPerGPU), "< 200 bytes", r.BytesPerGPU < 200)
	tw.Flush()
	if r.PlaceMisses > 0 {
		fmt.Fprintf(w, "\nnote: %d timed placements found no room\n", r.PlaceMisses)
	}
	fmt.Fprintf(w, "\nall multi-node gangs at the fewest leaves: %.1f%% of %d; fill and churn took %.0f ms\n",
		100*r.LocalityAtMinFrac, r.LocalityGangs, r.BuildMs)
}
