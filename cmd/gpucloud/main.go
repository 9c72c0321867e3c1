// Command gpucloud is the one binary of gpucloud: the control plane, the node
// agent, the simulator, the planner and the CLI. Each subcommand is a thin
// shell over a package in internal/.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// exitError carries an exit code for failures that are not usage errors.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "gpucloud",
		Short: "gpucloud: an open-source AI cloud computer",
		Long: `gpucloud turns a fleet of GPU servers on an InfiniBand fabric into a
multi-tenant cloud for training and serving large models: a topology-aware
gang scheduler, a digital twin, a training planner, a control plane on etcd
and a node agent, in one binary.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newTopologyCmd())
	for _, add := range extraCommands {
		root.AddCommand(add())
	}
	return root
}

// extraCommands lets each part register its subcommands from its own file.
var extraCommands []func() *cobra.Command

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}
