package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
)

func init() { extraCommands = append(extraCommands, newGetCmd) }

func newGetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get jobs|nodes|queues|tenants [NAME...]",
		Short: "List jobs, nodes, queues or tenants, or show some by name",
		Long: `List objects of one kind as a table (-o wide adds columns), or print them
as JSON or YAML in the API's own form. With names (job IDs or names), only
those objects; a single one prints as the object itself, several or none as
a list {"items": [...]}.`,
		Example: `  gpucloud get jobs
  gpucloud get jobs --phase Running -o wide
  gpucloud get job j1mz3x0abcd -o json | jq -r .status.phase
  gpucloud get jobs -w
  gpucloud get nodes
  gpucloud get queues -o yaml
  gpucloud get tenants`,
	}
	cn := addConnFlags(cmd)
	deps := newGetDeploymentsCmd(cn) // the same command as `deploy list`
	deps.Use, deps.Aliases = "deployments [NAME...]", []string{"deployment", "deploy"}
	deps.Example = "  gpucloud get deployments\n  gpucloud get deployment chat -o yaml"
	cmd.AddCommand(newGetJobsCmd(cn), newGetNodesCmd(cn), newGetQueuesCmd(cn), newGetTenantsCmd(cn), deps)
	return cmd
}

// jobFormats are the output formats of get.
var getFormats = []string{outTable, outWide, outJSON, outYAML, outName}

func newGetJobsCmd(cn *conn) *cobra.Command {
	var output, phase, queue, tenant, name string
	var watch bool
	cmd := &cobra.Command{
		Use:     "jobs [ID|NAME...]",
		Aliases: []string{"job"},
		Short:   "List jobs, or show some",
		Example: `  gpucloud get jobs
  gpucloud get jobs --phase Pending -o wide
  gpucloud get job hello -o json
  gpucloud get jobs -w`,
		ValidArgsFunction: completeJobs(cn),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, getFormats...); err != nil {
				return err
			}
			if phase != "" {
				p, err := parsePhase(phase)
				if err != nil {
					return err
				}
				phase = string(p)
			}
			c, err := cn.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			filter := client.JobFilter{Phase: api.Phase(phase), Queue: queue, Tenant: tenant, Name: name}
			if watch {
				if len(args) > 0 {
					return fmt.Errorf("-w watches every job (narrow with --phase, --queue, --tenant, --name)")
				}
				wctx, cancel := signalCtx(cmd)
				defer cancel()
				return cn.explain(watchJobs(wctx, c, filter, output, cmd.OutOrStdout()), "")
			}
			var jobs []api.Job
			if len(args) > 0 {
				jobs, err = getEach(args, func(ref string) (*api.Job, error) {
					return findJob(ctx, cn, c, ref, cmd.ErrOrStderr(), false)
				})
				if err != nil {
					return err
				}
			} else if jobs, err = allJobs(ctx, c, filter); err != nil {
				return cn.explain(err, "")
			}
			now := time.Now()
			out := cmd.OutOrStdout()
			if done, err := printMachine(out, output, jobs, len(args) == 1, jobID); done {
				return err
			}
			if len(jobs) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "No jobs. Submit one: gpucloud submit -f examples/hello/job.yaml")
				return nil
			}
			t := newTable(out, jobHeader(output == outWide)...)
			for i := range jobs {
				t.row(jobRow(&jobs[i], output == outWide, now)...)
			}
			return t.flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&phase, "phase", "", "only jobs in this phase: Pending|Running|Succeeded|Failed|Cancelled")
	f.StringVar(&queue, "queue", "", "only jobs of this queue")
	f.StringVar(&tenant, "tenant", "", "only jobs of this tenant (admin)")
	f.StringVar(&name, "name", "", "only jobs with this name")
	f.BoolVarP(&watch, "watch", "w", false, "print every change of a job as it happens (Ctrl-C to stop)")
	cmd.RegisterFlagCompletionFunc("phase", cobra.FixedCompletions([]string{"Pending", "Running", "Succeeded", "Failed", "Cancelled"}, cobra.ShellCompDirectiveNoFileComp))
	addOutputFlag(cmd, &output, getFormats...)
	return cmd
}

// getClient checks -o against get's formats, then makes the API client:
// a wrong -o is told before anything else.
func getClient(cn *conn, output string) (*client.Client, error) {
	if err := checkOutput(output, getFormats...); err != nil {
		return nil, err
	}
	return cn.client()
}

// listNamed lists every object of a kind and keeps those named (see
// pickNamed); a failed listing is explained as the connection's error.
func listNamed[T any](cn *conn, list func() ([]T, error), names []string, kind string, name func(*T) string) ([]T, error) {
	items, err := list()
	if err != nil {
		return nil, cn.explain(err, "")
	}
	return pickNamed(items, names, kind, name)
}

// getEach fetches the objects named, one request each, in the order given;
// the first error stops it.
func getEach[T any](names []string, get func(name string) (*T, error)) ([]T, error) {
	items := make([]T, 0, len(names))
	for _, n := range names {
		x, err := get(n)
		if err != nil {
			return nil, err
		}
		items = append(items, *x)
	}
	return items, nil
}

// pickNamed keeps the items named, in the order given (all of them when no
// name is given); a name that no item has is an error that says the kind.
func pickNamed[T any](items []T, names []string, kind string, name func(*T) string) ([]T, error) {
	if len(names) == 0 {
		return items, nil
	}
	byName := make(map[string]T, len(items))
	for i := range items {
		byName[name(&items[i])] = items[i]
	}
	picked := make([]T, 0, len(names))
	for _, n := range names {
		x, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("%s %q not found", kind, n)
		}
		picked = append(picked, x)
	}
	return picked, nil
}

// printMachine prints items in get's machine formats: -o json|yaml the
// object itself when one was asked for by name (one), else a list
// {"items": [...]}; -o name a name a line. done is false for the table
// formats, which the caller prints.
func printMachine[T any](w io.Writer, output string, items []T, one bool, name func(*T) string) (done bool, err error) {
	switch output {
	case outJSON, outYAML:
		if one {
			return true, printObject(w, output, &items[0])
		}
		return true, printObject(w, output, api.List[T]{Items: nonNil(items)})
	case outName:
		for i := range items {
			fmt.Fprintln(w, name(&items[i]))
		}
		return true, nil
	}
	return false, nil
}

// The names that -o name prints and get's arguments match.
func jobID(j *api.Job) string         { return j.Metadata.ID }
func nodeName(n *api.Node) string     { return n.Metadata.Name }
func queueName(q *api.Queue) string   { return q.Metadata.Name }
func tenantName(t *api.Tenant) string { return t.Metadata.Name }

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func parsePhase(s string) (api.Phase, error) {
	for _, p := range []api.Phase{api.PhasePending, api.PhaseRunning, api.PhaseSucceeded, api.PhaseFailed, api.PhaseCancelled} {
		if strings.EqualFold(s, string(p)) {
			return p, nil
		}
	}
	return "", fmt.Errorf("--phase %q: want Pending, Running, Succeeded, Failed or Cancelled", s)
}

func jobHeader(wide bool) []string {
	h := []string{"ID", "NAME", "TENANT", "QUEUE", "GPUS", "PHASE", "RESTARTS", "AGE"}
	if wide {
		h = append(h, "NODES", "LEAVES", "PRIORITY", "REASON")
	}
	return h
}

func jobRow(j *api.Job, wide bool, now time.Time) []string {
	restarts := strconv.Itoa(j.Status.Restarts)
	if j.Status.Requeues > 0 {
		restarts += fmt.Sprintf(" (+%d requeued)", j.Status.Requeues)
	}
	row := []string{j.Metadata.ID, j.Metadata.Name, j.Metadata.Tenant, j.Spec.Queue,
		strconv.Itoa(jobGPUs(j)), string(j.Status.Phase), restarts, age(j.Metadata.CreatedAt, now)}
	if wide {
		nodes, leaves := "", ""
		if p := j.Status.Placement; p != nil && j.Status.Phase == api.PhaseRunning {
			hosts := make([]string, len(p.Groups))
			for i, g := range p.Groups {
				hosts[i] = g.Hosts
			}
			nodes = strings.Join(hosts, ",")
			leaves = p.LeafNames
			if leaves == "" {
				leaves = strconv.Itoa(p.Leaves)
			}
		}
		row = append(row, nodes, leaves, strconv.Itoa(int(j.Spec.Priority)), oneLine(j.Status.Reason, 80))
	}
	return row
}

// oneLine keeps a message on one table line.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if max > 3 && len(s) > max {
		s = s[:max-3] + "..."
	}
	return s
}

// watchJobs prints a row (or a JSON line) for every change of a job:
// first the jobs as they are, sorted, then each change as it happens. The
// table's columns are as wide as the first listing makes them, so later
// rows line up.
func watchJobs(ctx context.Context, c *client.Client, f client.JobFilter, output string, w io.Writer) error {
	wide := output == outWide
	keep := func(j *api.Job) bool {
		return (f.Phase == "" || j.Status.Phase == f.Phase) && (f.Queue == "" || j.Spec.Queue == f.Queue) &&
			(f.Tenant == "" || j.Metadata.Tenant == f.Tenant) && (f.Name == "" || j.Metadata.Name == f.Name)
	}
	var rows *rowPrinter
	seen := map[string]int64{} // job ID -> resourceVersion printed
	if output == outTable || wide {
		jobs, err := allJobs(ctx, c, f)
		if err != nil {
			return err
		}
		now := time.Now()
		all := [][]string{jobHeader(wide)}
		for i := range jobs {
			all = append(all, jobRow(&jobs[i], wide, now))
			seen[jobs[i].Metadata.ID] = jobs[i].Metadata.ResourceVersion
		}
		rows = newRowPrinter(w, all)
	}
	err := c.WatchJobs(ctx, func(ev api.WatchEvent[api.Job]) error {
		j := &ev.Object
		if !keep(j) {
			return nil
		}
		switch output {
		case outJSON:
			return json.NewEncoder(w).Encode(ev) // one event a line
		case outYAML:
			fmt.Fprintln(w, "---")
			return printObject(w, outYAML, ev)
		case outName:
			_, err := fmt.Fprintln(w, j.Metadata.ID)
			return err
		}
		if rv, ok := seen[j.Metadata.ID]; ok && ev.Type == "ADDED" && rv >= j.Metadata.ResourceVersion {
			return nil // listed already
		}
		seen[j.Metadata.ID] = j.Metadata.ResourceVersion
		row := jobRow(j, wide, time.Now())
		if ev.Type == "DELETED" {
			row[5] = "Deleted"
		}
		return rows.print(row)
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// rowPrinter writes table rows one at a time in columns sized by the
// first rows, widening (never narrowing) when a later row needs it.
type rowPrinter struct {
	w      io.Writer
	widths []int
}

func newRowPrinter(w io.Writer, first [][]string) *rowPrinter {
	p := &rowPrinter{w: w}
	for _, r := range first {
		p.fit(r)
	}
	for _, r := range first {
		p.print(r)
	}
	return p
}

func (p *rowPrinter) fit(row []string) {
	for i, c := range row {
		if i >= len(p.widths) {
			p.widths = append(p.widths, 0)
		}
		p.widths[i] = max(p.widths[i], len(c))
	}
}

func (p *rowPrinter) print(row []string) error {
	p.fit(row)
	var b strings.Builder
	for i, c := range row {
		if c == "" {
			c = "-"
		}
		if i == len(row)-1 {
			b.WriteString(c)
			break
		}
		b.WriteString(c)
		b.WriteString(strings.Repeat(" ", p.widths[i]-len(c)+3))
	}
	b.WriteByte('\n')
	_, err := io.WriteString(p.w, b.String())
	return err
}

func newGetNodesCmd(cn *conn) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "nodes [NAME...]",
		Aliases: []string{"node", "no"},
		Short:   "List nodes with their GPUs, health and leaf switch, or show some",
		Example: `  gpucloud get nodes
  gpucloud get nodes -o wide
  gpucloud get node ndv5-0001 -o yaml`,
		ValidArgsFunction: completeNodes(cn),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := getClient(cn, output)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var nodes []api.Node
			if len(args) > 0 {
				nodes, err = getEach(args, func(name string) (*api.Node, error) {
					n, err := c.Node(ctx, name)
					if err != nil {
						return nil, cn.explain(err, fmt.Sprintf("node %q", name))
					}
					return n, nil
				})
				if err != nil {
					return err
				}
			} else if nodes, err = c.Nodes(ctx); err != nil {
				return cn.explain(err, "")
			}
			out := cmd.OutOrStdout()
			if done, err := printMachine(out, output, nodes, len(args) == 1, nodeName); done {
				return err
			}
			if len(nodes) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "No nodes: start an agent (`gpucloud up` runs one on this machine).")
				return nil
			}
			now := time.Now()
			wide := output == outWide
			h := []string{"NAME", "STATUS", "GPUS", "MODEL", "LEAF", "AGE"}
			if wide {
				h = append(h, "ADDRESS", "CPUS", "MEMORY", "HCAS", "UNHEALTHY", "AGENT", "LABELS", "REASON")
			}
			t := newTable(out, h...)
			for i := range nodes {
				n := &nodes[i]
				leaf := n.Status.Leaf
				row := []string{n.Metadata.Name, nodeStatus(n), fmt.Sprintf("%d/%d", n.Status.GPUsAllocated, n.Status.GPUs),
					nodeModel(n), leaf, age(n.Status.RegisteredAt, now)}
				if wide {
					inv := n.Status.Inventory
					mem := ""
					if inv.MemoryMiB > 0 {
						mem = fmt.Sprintf("%dGi", inv.MemoryMiB/1024)
					}
					row = append(row, n.Status.Address, itoa0(inv.CPUs), mem, itoa0(len(inv.HCAs)),
						intList(n.Status.Unhealthy), n.Status.AgentVersion, labelList(n.Metadata.Labels), oneLine(n.Status.Reason, 60))
				}
				t.row(row...)
			}
			return t.flush()
		},
	}
	addOutputFlag(cmd, &output, getFormats...)
	return cmd
}

func itoa0(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

func intList(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

// usage counts what the jobs of a queue or tenant hold and wait for.
type usage struct {
	running, pending       int
	gpus, pendingGPUs, all int
}

func usageBy(jobs []api.Job, key func(*api.Job) string) map[string]*usage {
	out := map[string]*usage{}
	for i := range jobs {
		j := &jobs[i]
		u := out[key(j)]
		if u == nil {
			u = &usage{}
			out[key(j)] = u
		}
		u.all++
		switch j.Status.Phase {
		case api.PhaseRunning:
			u.running++
			u.gpus += placedGPUs(j)
		case api.PhasePending:
			u.pending++
			u.pendingGPUs += jobGPUs(j)
		}
	}
	return out
}

// usageOf counts what every job holds and waits for, by key.
func usageOf(ctx context.Context, cn *conn, c *client.Client, key func(*api.Job) string) (map[string]*usage, error) {
	jobs, err := allJobs(ctx, c, client.JobFilter{})
	if err != nil {
		return nil, cn.explain(err, "")
	}
	return usageBy(jobs, key), nil
}

func newGetQueuesCmd(cn *conn) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "queues [NAME...]",
		Aliases: []string{"queue", "q"},
		Short:   "List queues with their quota and what their jobs use, or show some",
		Example: `  gpucloud get queues
  gpucloud get queue default -o yaml`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := getClient(cn, output)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			qs, err := listNamed(cn, func() ([]api.Queue, error) { return c.Queues(ctx) }, args, "queue", queueName)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if done, err := printMachine(out, output, qs, len(args) == 1, queueName); done {
				return err
			}
			use, err := usageOf(ctx, cn, c, func(j *api.Job) string { return j.Spec.Queue })
			if err != nil {
				return err
			}
			wide := output == outWide
			h := []string{"NAME", "PARENT", "QUOTA", "GPUS", "RUNNING", "PENDING", "WEIGHT"}
			if wide {
				h = append(h, "BORROWING-LIMIT", "PENDING-GPUS", "TENANTS")
			}
			t := newTable(out, h...)
			for _, q := range qs {
				u := use[q.Metadata.Name]
				if u == nil {
					u = &usage{}
				}
				quota := strconv.Itoa(q.Spec.Quota)
				if q.Spec.QuotaRemainder {
					quota = "rest"
				}
				row := []string{q.Metadata.Name, q.Spec.Parent, quota, strconv.Itoa(u.gpus), strconv.Itoa(u.running),
					strconv.Itoa(u.pending), strconv.FormatFloat(max(q.Spec.Weight, 0), 'g', -1, 64)}
				if wide {
					limit := "none"
					if q.Spec.BorrowingLimit != nil {
						limit = strconv.Itoa(*q.Spec.BorrowingLimit)
					}
					tenants := strings.Join(q.Spec.Tenants, ",")
					if tenants == "" {
						tenants = "all"
					}
					row = append(row, limit, strconv.Itoa(u.pendingGPUs), tenants)
				}
				t.row(row...)
			}
			return t.flush()
		},
	}
	addOutputFlag(cmd, &output, getFormats...)
	return cmd
}

func newGetTenantsCmd(cn *conn) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "tenants [NAME...]",
		Aliases: []string{"tenant"},
		Short:   "List tenants with what their jobs use, or show some",
		Example: `  gpucloud get tenants
  gpucloud get tenant default -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := getClient(cn, output)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			ts, err := listNamed(cn, func() ([]api.Tenant, error) { return c.Tenants(ctx) }, args, "tenant", tenantName)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if done, err := printMachine(out, output, ts, len(args) == 1, tenantName); done {
				return err
			}
			use, err := usageOf(ctx, cn, c, func(j *api.Job) string { return j.Metadata.Tenant })
			if err != nil {
				return err
			}
			sort.Slice(ts, func(i, j int) bool { return ts[i].Metadata.Name < ts[j].Metadata.Name })
			now := time.Now()
			h := []string{"NAME", "DEFAULT-QUEUE", "GPUS", "RUNNING", "PENDING", "JOBS", "AGE"}
			if output == outWide {
				h = append(h, "DESCRIPTION")
			}
			t := newTable(out, h...)
			for _, tn := range ts {
				u := use[tn.Metadata.Name]
				if u == nil {
					u = &usage{}
				}
				dq := tn.Spec.DefaultQueue
				if dq == "" {
					dq = "default"
				}
				row := []string{tn.Metadata.Name, dq, strconv.Itoa(u.gpus), strconv.Itoa(u.running), strconv.Itoa(u.pending),
					strconv.Itoa(u.all), age(tn.Metadata.CreatedAt, now)}
				if output == outWide {
					row = append(row, oneLine(tn.Spec.Description, 60))
				}
				t.row(row...)
			}
			return t.flush()
		},
	}
	addOutputFlag(cmd, &output, getFormats...)
	return cmd
}

// Shell completion of job IDs and node names, from the API.

func completeJobs(cn *conn) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
		c, err := cn.client()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		jobs, err := allJobs(ctx, c, client.JobFilter{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, j := range jobs {
			if strings.HasPrefix(j.Metadata.ID, prefix) {
				out = append(out, j.Metadata.ID+"\t"+j.Metadata.Name+" "+string(j.Status.Phase))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func completeNodes(cn *conn) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
		c, err := cn.client()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		nodes, err := c.Nodes(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, n := range nodes {
			if strings.HasPrefix(n.Metadata.Name, prefix) {
				out = append(out, n.Metadata.Name+"\t"+nodeStatus(&n))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// labelList writes labels as k=v,k=v in key order ("" when none).
func labelList(m map[string]string) string {
	kv := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		kv = append(kv, k+"="+m[k])
	}
	return strings.Join(kv, ",")
}
