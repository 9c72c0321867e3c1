package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"gpucloud/internal/client"
)

func init() {
	extraCommands = append(extraCommands,
		func() *cobra.Command { return newNodeActionCmd("cordon") },
		func() *cobra.Command { return newNodeActionCmd("uncordon") },
		func() *cobra.Command { return newNodeActionCmd("drain") })
}

var nodeActionHelp = map[string]struct{ short, long, example, done string }{
	"cordon": {
		short: "Take no new work on nodes; what runs there stays",
		long: `Mark nodes unschedulable: no new gang is placed on them, and the gangs
running there go on. Undo with uncordon.`,
		example: `  gpucloud cordon ndv5-0003 --reason "replacing a fan"`,
		done:    "cordoned",
	},
	"uncordon": {
		short:   "Let nodes take work again (undoes cordon and drain)",
		example: `  gpucloud uncordon ndv5-0003`,
		done:    "uncordoned",
	},
	"drain": {
		short: "Cordon nodes and send their gangs back to the queue",
		long: `Cordon nodes and requeue the gangs running on them: their ranks are stopped
(SIGTERM, then SIGKILL after the agent's grace period) and the jobs wait to be
placed elsewhere, resuming from their checkpoints. A requeue does not count
against a job's restartPolicy. --wait returns once no gang runs there.`,
		example: `  gpucloud drain ndv5-0003 --reason "IB link flapping" --wait`,
		done:    "draining",
	},
}

func newNodeActionCmd(action string) *cobra.Command {
	var reason string
	var wait bool
	var timeout time.Duration
	var cn *conn
	h := nodeActionHelp[action]
	cmd := &cobra.Command{
		Use:     action + " NODE...",
		Short:   h.short,
		Long:    h.long,
		Example: h.example,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			for _, name := range args {
				n, err := c.NodeAction(ctx, name, action, reason)
				if err != nil {
					return cn.explain(err, fmt.Sprintf("node %q", name))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "node %s %s\n", n.Metadata.Name, h.done)
			}
			if !wait {
				return nil
			}
			wctx, cancel := signalCtx(cmd)
			defer cancel()
			wctx, cancel2 := context.WithTimeout(wctx, timeout)
			defer cancel2()
			for _, name := range args {
				if err := waitNodeEmpty(wctx, c, name); err != nil {
					return cn.explain(err, "")
				}
				fmt.Fprintf(cmd.OutOrStdout(), "node %s drained: no gang runs there\n", name)
			}
			return nil
		},
	}
	if action != "uncordon" {
		cmd.Flags().StringVar(&reason, "reason", "", "why (shown in get nodes -o wide and describe node)")
	}
	if action == "drain" {
		cmd.Flags().BoolVar(&wait, "wait", false, "return once no gang runs on the nodes")
		cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "with --wait: give up after this long")
	}
	cn = addConnFlags(cmd)
	cmd.ValidArgsFunction = completeNodes(cn)
	return cmd
}

// waitNodeEmpty waits until the node holds no GPU of a running job.
func waitNodeEmpty(ctx context.Context, c *client.Client, name string) error {
	for {
		n, err := c.Node(ctx, name)
		if err != nil {
			return err
		}
		if n.Status.GPUsAllocated == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("node %s still holds %d GPUs of running gangs after --timeout", name, n.Status.GPUsAllocated)
			}
			return fmt.Errorf("stopped waiting; node %s is still draining", name)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
