package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
)

func init() { extraCommands = append(extraCommands, newTopCmd) }

// topReport is what top shows; -o json prints it.
type topReport struct {
	GPUs      int         `json:"gpus"`
	Allocated int         `json:"gpusAllocated"`
	Nodes     []topNode   `json:"nodes"`
	Tenants   []topTenant `json:"tenants"`
}

type topNode struct {
	Name      string `json:"name"`
	Status    string `json:"status"`
	Leaf      string `json:"leaf,omitempty"`
	GPUs      int    `json:"gpus"`
	Allocated int    `json:"gpusAllocated"`
	Jobs      int    `json:"jobs"`
	Emulated  bool   `json:"emulated,omitempty"`
}

type topTenant struct {
	Name        string `json:"name"`
	GPUs        int    `json:"gpus"`
	Running     int    `json:"running"`
	Pending     int    `json:"pending"`
	PendingGPUs int    `json:"pendingGPUs"`
}

func newTopCmd() *cobra.Command {
	var output string
	var watch time.Duration
	var cn *conn
	cmd := &cobra.Command{
		Use:   "top [nodes|tenants]",
		Short: "Show GPU allocation by node and by tenant",
		Long: `Show how the GPUs are used: per node, the GPUs held by running gangs and
the jobs there; per tenant, the GPUs its running jobs hold, their share of the
fleet, and what its pending jobs wait for. It reads the API only.

The figures are allocations (GPUs given to gangs), not the GPUs' own
utilization counters.`,
		Example: `  gpucloud top
  gpucloud top nodes
  gpucloud top tenants -w 2s
  gpucloud top -o json`,
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: []string{"nodes", "tenants"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, outTable, outJSON); err != nil {
				return err
			}
			what := "all"
			if len(args) == 1 {
				switch args[0] {
				case "nodes", "node", "no":
					what = "nodes"
				case "tenants", "tenant":
					what = "tenants"
				default:
					return fmt.Errorf("top %s: want nodes or tenants", args[0])
				}
			}
			c, err := cn.client()
			if err != nil {
				return err
			}
			ctx, cancel := signalCtx(cmd)
			defer cancel()
			out := cmd.OutOrStdout()
			for {
				rep, err := readTop(ctx, c)
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return cn.explain(err, "")
				}
				if watch > 0 && isTerminal(out) {
					fmt.Fprint(out, "\033[H\033[2J")
				}
				if output == outJSON {
					if err := printObject(out, outJSON, rep); err != nil {
						return err
					}
				} else if err := writeTop(out, rep, what); err != nil {
					return err
				}
				if watch <= 0 {
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(watch):
				}
				if !isTerminal(out) {
					fmt.Fprintln(out)
				}
			}
		},
	}
	addOutputFlag(cmd, &output, outTable, outJSON)
	cmd.Flags().DurationVarP(&watch, "watch", "w", 0, "refresh at this interval (e.g. 2s) until Ctrl-C")
	cn = addConnFlags(cmd)
	return cmd
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func readTop(ctx context.Context, c *client.Client) (*topReport, error) {
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	jobs, err := allJobs(ctx, c, client.JobFilter{})
	if err != nil {
		return nil, err
	}
	return buildTop(nodes, jobs), nil
}

// buildTop sums the allocation per node and per tenant.
func buildTop(nodes []api.Node, jobs []api.Job) *topReport {
	rep := &topReport{Nodes: []topNode{}, Tenants: []topTenant{}}
	jobsOn := map[string]int{}
	for i := range jobs {
		j := &jobs[i]
		if j.Status.Phase != api.PhaseRunning || j.Status.Placement == nil {
			continue
		}
		ex, err := j.Status.Placement.Expand()
		if err != nil {
			continue
		}
		for _, ng := range ex {
			jobsOn[ng.Node]++
		}
	}
	for i := range nodes {
		n := &nodes[i]
		tn := topNode{Name: n.Metadata.Name, Status: nodeStatus(n), Leaf: n.Status.Leaf, GPUs: n.Status.GPUs,
			Allocated: n.Status.GPUsAllocated, Jobs: jobsOn[n.Metadata.Name]}
		if g := n.Status.Inventory.GPUs; len(g) > 0 && g[0].Emulated {
			tn.Emulated = true
		}
		rep.Nodes = append(rep.Nodes, tn)
		rep.GPUs += tn.GPUs
		rep.Allocated += tn.Allocated
	}
	sort.Slice(rep.Nodes, func(a, b int) bool {
		if rep.Nodes[a].Allocated != rep.Nodes[b].Allocated {
			return rep.Nodes[a].Allocated > rep.Nodes[b].Allocated
		}
		return rep.Nodes[a].Name < rep.Nodes[b].Name
	})
	for name, u := range usageBy(jobs, func(j *api.Job) string { return j.Metadata.Tenant }) {
		if u.running == 0 && u.pending == 0 {
			continue
		}
		rep.Tenants = append(rep.Tenants, topTenant{Name: name, GPUs: u.gpus, Running: u.running, Pending: u.pending, PendingGPUs: u.pendingGPUs})
	}
	sort.Slice(rep.Tenants, func(a, b int) bool {
		if rep.Tenants[a].GPUs != rep.Tenants[b].GPUs {
			return rep.Tenants[a].GPUs > rep.Tenants[b].GPUs
		}
		return rep.Tenants[a].Name < rep.Tenants[b].Name
	})
	return rep
}

func writeTop(w io.Writer, rep *topReport, what string) error {
	fmt.Fprintf(w, "GPUs: %d of %d allocated (%s) on %d nodes\n", rep.Allocated, rep.GPUs, pct(rep.Allocated, rep.GPUs), len(rep.Nodes))
	if (what == "all" || what == "nodes") && len(rep.Nodes) > 0 {
		fmt.Fprintln(w)
		t := newTable(w, "NODE", "STATUS", "LEAF", "GPUS", "USED", "ALLOCATED", "", "JOBS")
		for _, n := range rep.Nodes {
			t.row(n.Name, n.Status, n.Leaf, strconv.Itoa(n.GPUs), strconv.Itoa(n.Allocated), bar(n.Allocated, n.GPUs, 10), pct(n.Allocated, n.GPUs), strconv.Itoa(n.Jobs))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if what == "all" || what == "tenants" {
		fmt.Fprintln(w)
		if len(rep.Tenants) == 0 {
			fmt.Fprintln(w, "No tenant has running or pending jobs.")
			return nil
		}
		t := newTable(w, "TENANT", "GPUS", "SHARE", "RUNNING", "PENDING", "PENDING-GPUS")
		for _, tn := range rep.Tenants {
			t.row(tn.Name, strconv.Itoa(tn.GPUs), pct(tn.GPUs, rep.GPUs), strconv.Itoa(tn.Running), strconv.Itoa(tn.Pending), strconv.Itoa(tn.PendingGPUs))
		}
		return t.flush()
	}
	return nil
}

func pct(a, b int) string {
	if b == 0 {
		return "0%"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(a)/float64(b))
}

// bar draws a/b as [####      ].
func bar(a, b, width int) string {
	n := 0
	if b > 0 {
		n = (a*width + b/2) / b
	}
	n = min(max(n, 0), width)
	if a > 0 && n == 0 {
		n = 1
	}
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}
