package main

import (
	"fmt"
	"io"
	"math/bits"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
)

func init() { extraCommands = append(extraCommands, newDescribeCmd) }

func newDescribeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "describe job|node NAME",
		Short: "Show a job (placement by leaf switch, node and GPU; events) or a node in detail",
		Example: `  gpucloud describe job j1mz3x0abcd
  gpucloud describe job hello
  gpucloud describe node ndv5-0001`,
	}
	cn := addConnFlags(cmd)
	cmd.AddCommand(newDescribeJobCmd(cn), newDescribeNodeCmd(cn))
	return cmd
}

func newDescribeJobCmd(cn *conn) *cobra.Command {
	return &cobra.Command{
		Use:     "job ID|NAME",
		Aliases: []string{"jobs"},
		Short:   "Show a job: what it asks, where each rank runs (leaf switch, node, GPUs), and its events",
		Example: `  gpucloud describe job j1mz3x0abcd
  gpucloud describe job hello`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeJobs(cn),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			j, err := findJob(ctx, cn, c, args[0], cmd.ErrOrStderr(), false)
			if err != nil {
				return err
			}
			evs, err := c.JobEvents(ctx, j.Metadata.ID)
			if err != nil {
				return cn.explain(err, "")
			}
			var nodes []api.Node
			if j.Status.Placement != nil {
				if nodes, err = c.Nodes(ctx); err != nil {
					return cn.explain(err, "")
				}
			}
			return describeJob(cmd.OutOrStdout(), j, nodes, evs, time.Now())
		},
	}
}

// describeJob writes a job for people: the request, the state, the
// placement grouped by leaf switch then node with each node's GPUs and
// ranks, and the events.
func describeJob(w io.Writer, j *api.Job, nodes []api.Node, evs []api.Event, now time.Time) error {
	t := newTable(w)
	kv := func(k, v string) { t.row(k+":", v) }
	s, st := &j.Spec, &j.Status
	kv("ID", j.Metadata.ID)
	kv("Name", j.Metadata.Name)
	kv("Tenant", j.Metadata.Tenant)
	kv("Queue", s.Queue)
	for _, k := range sortedKeys(j.Metadata.Labels) {
		kv("Label", k+"="+j.Metadata.Labels[k])
	}
	phase := string(st.Phase)
	if st.Reason != "" {
		phase += " (" + oneLine(st.Reason, 200) + ")"
	}
	kv("Phase", phase)
	gang := gangSummary(j) + ", launch " + s.Launch
	if s.MinReplicas > 0 {
		gang += fmt.Sprintf(", elastic down to %d replicas", s.MinReplicas)
	}
	if s.GPUModel != "" {
		gang += ", model " + s.GPUModel
	}
	kv("Gang", gang)
	if s.TensorParallel > 0 {
		kv("Tensor parallel", strconv.Itoa(s.TensorParallel)+" GPUs per NVLink domain")
	}
	if s.Topology.Required != "" || s.Topology.Preferred != "" {
		var parts []string
		if s.Topology.Required != "" {
			parts = append(parts, "required "+s.Topology.Required)
		}
		if s.Topology.Preferred != "" {
			parts = append(parts, "preferred "+s.Topology.Preferred)
		}
		kv("Topology", strings.Join(parts, ", "))
	}
	kv("Command", shellQuote(s.Command))
	if s.WorkingDir != "" {
		kv("Working dir", s.WorkingDir)
	}
	for _, k := range sortedKeys(s.Env) {
		kv("Env", k+"="+s.Env[k])
	}
	kv("Priority", fmt.Sprintf("%d%s", s.Priority, map[bool]string{true: ", preemptible", false: ""}[s.Preemptible]))
	kv("Restarts", fmt.Sprintf("%d of at most %d; requeued %d times", st.Restarts, s.RestartPolicy.MaxRestarts, st.Requeues))
	if st.Generation > 0 {
		kv("Generation", strconv.Itoa(st.Generation))
	}
	if st.MasterPort > 0 && st.Phase == api.PhaseRunning {
		kv("Master port", strconv.Itoa(st.MasterPort))
	}
	kv("Submitted", stamp(st.SubmittedAt, now))
	if !st.StartedAt.IsZero() {
		kv("Started", stamp(st.StartedAt, now))
	}
	if !st.FinishedAt.IsZero() {
		d := ""
		if !st.StartedAt.IsZero() {
			d = fmt.Sprintf(" after %s", st.FinishedAt.Sub(st.StartedAt).Round(100*time.Millisecond))
		}
		kv("Finished", stamp(st.FinishedAt, now)+d)
	}
	if st.ExitCode != 0 {
		kv("Exit code", strconv.Itoa(st.ExitCode))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if p := st.Placement; p != nil && st.Phase == api.PhaseRunning {
		fmt.Fprintf(w, "\nPlacement: %s (fewest leaves possible: %d)\n", placementSummary(p), p.MinLeaves)
		if err := writePlacement(w, j, nodes); err != nil {
			return err
		}
	}
	return writeEvents(w, evs, now)
}

// writeEvents ends a description with its events, oldest first (evs is
// sorted in place).
func writeEvents(w io.Writer, evs []api.Event, now time.Time) error {
	fmt.Fprintln(w, "\nEvents:")
	if len(evs) == 0 {
		fmt.Fprintln(w, "  none in the last hour")
		return nil
	}
	sort.SliceStable(evs, func(a, b int) bool { return evs[a].Time.Before(evs[b].Time) })
	et := newTable(w, "  AGE", "TYPE", "REASON", "MESSAGE")
	for _, e := range evs {
		typ := e.Type
		if typ == "" {
			typ = "Normal"
		}
		et.row("  "+age(e.Time, now), typ, e.Reason, oneLine(e.Message, 160))
	}
	return et.flush()
}

// writePlacement lists the placement by leaf switch, then node, with each
// node's GPUs and the ranks on them.
func writePlacement(w io.Writer, j *api.Job, nodes []api.Node) error {
	p := j.Status.Placement
	expanded, err := p.Expand()
	if err != nil {
		return fmt.Errorf("placement of job %s: %w", j.Metadata.ID, err)
	}
	byName := map[string]*api.Node{}
	for i := range nodes {
		byName[nodes[i].Metadata.Name] = &nodes[i]
	}
	asg := api.BuildAssignments(j, expanded, "")
	type line struct{ leaf, node, gpus, ranks string }
	var lines []line
	for i, ng := range expanded {
		leaf := "?"
		if n := byName[ng.Node]; n != nil && n.Status.Leaf != "" {
			leaf = n.Status.Leaf
		}
		var ranks []int
		for _, pr := range asg[i].Processes {
			ranks = append(ranks, pr.Rank)
		}
		lines = append(lines, line{leaf, ng.Node, fmt.Sprintf("%s (%d)", api.GPUList(ng.GPUs), bits.OnesCount64(ng.GPUs)), rangeList(ranks)})
	}
	// Keep rank order inside a leaf, leaves in the order of their first rank.
	order := map[string]int{}
	for i, l := range lines {
		if _, ok := order[l.leaf]; !ok {
			order[l.leaf] = i
		}
	}
	sort.SliceStable(lines, func(a, b int) bool { return order[lines[a].leaf] < order[lines[b].leaf] })
	t := newTable(w, "  LEAF", "NODE", "GPUS", "RANKS")
	prev := ""
	for _, l := range lines {
		leaf := l.leaf
		if leaf == prev {
			leaf = ""
		} else {
			prev = leaf
		}
		if leaf == "" {
			leaf = " "
		}
		t.row("  "+leaf, l.node, l.gpus, l.ranks)
	}
	return t.flush()
}

// rangeList writes sorted ints as "0-3,8".
func rangeList(xs []int) string {
	sort.Ints(xs)
	var b strings.Builder
	for i := 0; i < len(xs); {
		k := i
		for k+1 < len(xs) && xs[k+1] == xs[k]+1 {
			k++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(xs[i]))
		if k > i {
			b.WriteString("-" + strconv.Itoa(xs[k]))
		}
		i = k + 1
	}
	return b.String()
}

func stamp(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05") + " (" + age(t, now) + " ago)"
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// shellQuote writes a command as a shell would read it back.
func shellQuote(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
		}) < 0 {
			out[i] = a
			continue
		}
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return oneLine(strings.Join(out, " "), 300)
}

func newDescribeNodeCmd(cn *conn) *cobra.Command {
	return &cobra.Command{
		Use:               "node NAME",
		Aliases:           []string{"nodes", "no"},
		Short:             "Show a node: hardware, health, leaf switch, and the jobs on it",
		Example:           `  gpucloud describe node ndv5-0001`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNodes(cn),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			n, err := c.Node(ctx, args[0])
			if err != nil {
				return cn.explain(err, fmt.Sprintf("node %q", args[0]))
			}
			jobs, err := allJobs(ctx, c, client.JobFilter{Phase: api.PhaseRunning})
			if err != nil {
				return cn.explain(err, "")
			}
			evs, err := c.Events(ctx, api.KindNode, n.Metadata.Name)
			if err != nil {
				return cn.explain(err, "")
			}
			return describeNode(cmd.OutOrStdout(), n, jobs, evs, time.Now())
		},
	}
}

func describeNode(w io.Writer, n *api.Node, running []api.Job, evs []api.Event, now time.Time) error {
	t := newTable(w)
	kv := func(k, v string) { t.row(k+":", v) }
	st := &n.Status
	kv("Name", n.Metadata.Name)
	kv("Status", nodeStatus(n))
	if st.Reason != "" {
		kv("Reason", st.Reason)
	}
	leaf := st.Leaf
	if !st.InFabric {
		leaf += " (registered by its agent; the fabric does not list it)"
	}
	kv("Leaf", leaf)
	kv("Address", st.Address)
	kv("GPUs", fmt.Sprintf("%d, %d allocated", st.GPUs, st.GPUsAllocated))
	if len(st.Unhealthy) > 0 {
		kv("Unhealthy GPUs", intList(st.Unhealthy))
	}
	inv := st.Inventory
	if inv.Hostname != "" {
		kv("Hostname", inv.Hostname)
	}
	if inv.CPUs > 0 {
		kv("CPUs", strconv.Itoa(inv.CPUs))
	}
	if inv.MemoryMiB > 0 {
		kv("Memory", fmt.Sprintf("%d GiB", inv.MemoryMiB/1024))
	}
	kv("Agent", st.AgentVersion)
	kv("Registered", stamp(st.RegisteredAt, now))
	if err := t.flush(); err != nil {
		return err
	}
	if len(inv.GPUs) > 0 {
		fmt.Fprintln(w, "\nGPUs:")
		gt := newTable(w, "  INDEX", "MODEL", "MEMORY", "UUID", "JOB")
		owner := map[int]string{}
		for i := range running {
			j := &running[i]
			if j.Status.Placement == nil {
				continue
			}
			ex, err := j.Status.Placement.Expand()
			if err != nil {
				continue
			}
			for _, ng := range ex {
				if ng.Node != n.Metadata.Name {
					continue
				}
				for g := 0; g < 64; g++ {
					if ng.GPUs&(1<<uint(g)) != 0 {
						owner[g] = j.Metadata.ID + " (" + j.Metadata.Name + ")"
					}
				}
			}
		}
		for _, g := range inv.GPUs {
			model := g.Model
			if g.Emulated {
				model += " (emulated)"
			}
			gt.row("  "+strconv.Itoa(g.Index), model, fmt.Sprintf("%d MiB", g.MemoryMiB), g.UUID, owner[g.Index])
		}
		if err := gt.flush(); err != nil {
			return err
		}
	}
	if len(inv.HCAs) > 0 {
		fmt.Fprintln(w, "\nInfiniBand:")
		ht := newTable(w, "  HCA", "PORT", "STATE", "RATE")
		for _, h := range inv.HCAs {
			ht.row("  "+h.Name, strconv.Itoa(h.Port), h.State, fmt.Sprintf("%g Gb/s", h.RateGbps))
		}
		if err := ht.flush(); err != nil {
			return err
		}
	}
	return writeEvents(w, evs, now)
}
