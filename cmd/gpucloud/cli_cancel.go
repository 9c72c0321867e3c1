package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func init() { extraCommands = append(extraCommands, newCancelCmd) }

func newCancelCmd() *cobra.Command {
	var cn *conn
	cmd := &cobra.Command{
		Use:   "cancel ID|NAME...",
		Short: "Cancel jobs: their ranks are stopped (SIGTERM, then SIGKILL after the grace period)",
		Example: `  gpucloud cancel j1mz3x0abcd
  gpucloud cancel $(gpucloud get jobs --phase Pending -o name)`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var errs []error
			for _, ref := range args {
				j, err := findJob(ctx, cn, c, ref, nil, true)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if j.Status.Phase.Terminal() {
					errs = append(errs, fmt.Errorf("job %s (%s) has already ended: %s", j.Metadata.ID, j.Metadata.Name, j.Status.Phase))
					continue
				}
				nj, err := c.Cancel(ctx, j.Metadata.ID)
				if err != nil {
					errs = append(errs, fmt.Errorf("job %s: %w", j.Metadata.ID, cn.explain(err, "")))
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "job %s (%s) cancelled (was %s)\n", nj.Metadata.ID, nj.Metadata.Name, j.Status.Phase)
			}
			if len(errs) == 1 {
				return errs[0]
			}
			if len(errs) > 1 {
				msgs := make([]string, len(errs))
				for i, e := range errs {
					msgs[i] = e.Error()
				}
				return fmt.Errorf("%d of %d jobs not cancelled: %s", len(errs), len(args), strings.Join(msgs, "; "))
			}
			return nil
		},
	}
	cn = addConnFlags(cmd)
	cmd.ValidArgsFunction = completeJobs(cn)
	return cmd
}
