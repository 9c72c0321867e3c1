package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"gpucloud/internal/api"
)

func init() { extraCommands = append(extraCommands, newLogsCmd) }

func newLogsCmd() *cobra.Command {
	var rank int
	var follow bool
	var cn *conn
	cmd := &cobra.Command{
		Use:   "logs ID|NAME",
		Short: "Print a job's output, relayed from its nodes",
		Long: `Print the output (stdout and stderr) of a job's ranks. Without --rank every
rank's lines are printed, each tagged "[rank N]"; with --rank N the rank's
output as it is. -f keeps printing new output until the job ends (Ctrl-C
stops following; the job goes on).`,
		Example: `  gpucloud logs j1mz3x0abcd
  gpucloud logs hello --rank 0
  gpucloud logs -f j1mz3x0abcd`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("rank") && rank < 0 {
				return fmt.Errorf("--rank %d: want a rank of the job (0 or more)", rank)
			}
			c, err := cn.client()
			if err != nil {
				return err
			}
			ctx, cancel := signalCtx(cmd)
			defer cancel()
			j, err := findJob(ctx, cn, c, args[0], cmd.ErrOrStderr(), false)
			if err != nil {
				return err
			}
			if ws := worldSize(j); cmd.Flags().Changed("rank") && ws > 0 && rank >= ws {
				return fmt.Errorf("--rank %d: job %s has ranks 0-%d", rank, j.Metadata.ID, ws-1)
			}
			if !cmd.Flags().Changed("rank") {
				rank = -1
			}
			if j.Status.Phase == api.PhasePending && !follow {
				fmt.Fprintf(cmd.ErrOrStderr(), "job %s is Pending: no output yet (-f waits for it)\n", j.Metadata.ID)
			}
			rc, err := c.Logs(ctx, j.Metadata.ID, rank, follow)
			if err != nil {
				return cn.explain(err, fmt.Sprintf("job %q", args[0]))
			}
			defer rc.Close()
			_, err = io.Copy(cmd.OutOrStdout(), rc)
			if ctx.Err() != nil {
				return nil // Ctrl-C while following
			}
			return err
		},
	}
	cmd.Flags().IntVar(&rank, "rank", 0, "only this rank's output (default: every rank, tagged)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output until the job ends")
	cn = addConnFlags(cmd)
	cmd.ValidArgsFunction = completeJobs(cn)
	return cmd
}

// worldSize is the number of ranks of a job (0 when unknown): one per
// replica, or one per GPU with launch per-gpu.
func worldSize(j *api.Job) int {
	if j.Spec.Launch == api.LaunchPerGPU {
		return jobGPUs(j)
	}
	return j.Spec.Replicas
}
