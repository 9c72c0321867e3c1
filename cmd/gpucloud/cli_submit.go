package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
)

func init() { extraCommands = append(extraCommands, newSubmitCmd) }

func newSubmitCmd() *cobra.Command {
	var files []string
	var output, queue, name string
	var dryRun, wait bool
	var timeout time.Duration
	var cn *conn
	cmd := &cobra.Command{
		Use:   "submit -f JOB.yaml",
		Short: "Submit jobs written as YAML or JSON",
		Long: `Submit one or more jobs. A file may hold several jobs separated by "---";
"-f -" reads standard input.

The job is checked here first, so a mistake names the file and the field
before anything is sent. A relative spec.workingDir is taken relative to the
job file's directory (the nodes must see that path: true on ` + "`gpucloud up`" + `,
or on a shared filesystem); without one, each rank runs in a fresh directory
of its node.

-o json prints the created job with its metadata.id; -o name prints the ID
alone, for scripts. --wait follows the job until it ends and exits non-zero
unless it succeeded.`,
		Example: `  gpucloud submit -f examples/hello/job.yaml
  gpucloud submit -f examples/ddp/job.yaml --wait
  id=$(gpucloud submit -f job.yaml -o name) && gpucloud logs -f "$id"
  gpucloud submit -f job.yaml -o json | jq -r .metadata.id
  cat job.yaml | gpucloud submit -f - --queue research`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, outTable, outJSON, outYAML, outName); err != nil {
				return err
			}
			if len(files) == 0 {
				return errors.New("no job: give -f FILE (or -f - for standard input)")
			}
			jobs, err := readFiles(files, cmd.InOrStdin(), readJobFile)
			if err != nil {
				return err
			}
			if name != "" && len(jobs) > 1 {
				return errors.New("--name: the files hold several jobs")
			}
			for _, j := range jobs {
				if name != "" {
					j.Metadata.Name = name
				}
				if queue != "" {
					j.Spec.Queue = queue
				}
				if err := api.ValidateJob(j); err != nil {
					return fmt.Errorf("job %s: %w", j.Metadata.Name, err)
				}
			}
			out := cmd.OutOrStdout()
			if dryRun {
				for _, j := range jobs {
					fmt.Fprintf(out, "job %s: valid (%s)\n", j.Metadata.Name, gangSummary(j))
				}
				return nil
			}
			c, err := cn.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var created []*api.Job
			for _, j := range jobs {
				nj, err := c.Submit(ctx, j)
				if err != nil {
					if len(created) > 0 {
						fmt.Fprintf(cmd.ErrOrStderr(), "submitted %d of %d jobs before this error\n", len(created), len(jobs))
					}
					return fmt.Errorf("job %s: %w", j.Metadata.Name, cn.explain(err, ""))
				}
				created = append(created, nj)
				if output == outTable {
					fmt.Fprintf(out, "job %s (%s) submitted: %s on queue %s\n", nj.Metadata.ID, nj.Metadata.Name, gangSummary(nj), nj.Spec.Queue)
				}
			}
			if wait {
				wctx, cancel := signalCtx(cmd)
				defer cancel()
				if timeout > 0 {
					wctx, cancel = context.WithTimeout(wctx, timeout)
					defer cancel()
				}
				progress := out
				if output != outTable {
					progress = cmd.ErrOrStderr()
				}
				final, err := waitJobs(wctx, c, created, progress)
				if err != nil {
					return cn.explain(err, "")
				}
				created = final
			}
			switch output {
			case outName:
				for _, j := range created {
					fmt.Fprintln(out, j.Metadata.ID)
				}
			case outJSON, outYAML:
				var v any = created[0]
				if len(created) > 1 {
					v = api.List[*api.Job]{Items: created}
				}
				if err := printObject(out, output, v); err != nil {
					return err
				}
			}
			if wait {
				var failed []string
				for _, j := range created {
					if j.Status.Phase != api.PhaseSucceeded {
						failed = append(failed, fmt.Sprintf("%s (%s) %s", j.Metadata.ID, j.Metadata.Name, j.Status.Phase))
					}
				}
				if len(failed) > 0 {
					return &exitError{code: 2, err: fmt.Errorf("not succeeded: %s", strings.Join(failed, ", "))}
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&files, "filename", "f", nil, "job file (YAML or JSON; - for standard input); repeatable")
	cmd.MarkFlagFilename("filename", "yaml", "yml", "json")
	f.StringVar(&queue, "queue", "", "submit to this queue instead of the file's")
	f.StringVar(&name, "name", "", "name the job so instead of the file's metadata.name")
	f.BoolVar(&dryRun, "dry-run", false, "check the jobs and send nothing")
	f.BoolVar(&wait, "wait", false, "follow the jobs until they end; exit 2 unless all succeeded")
	f.DurationVar(&timeout, "timeout", 0, "with --wait: give up after this long (0: never)")
	addOutputFlag(cmd, &output, outTable, outJSON, outYAML, outName)
	cn = addConnFlags(cmd)
	return cmd
}

// readJobFile reads the jobs of a file ("-": r), checked, with a relative
// workingDir made absolute against the file's directory.
func readJobFile(path string, stdin io.Reader) ([]*api.Job, error) {
	docs, whereDoc, err := readDocuments(path, stdin, "job")
	if err != nil {
		return nil, err
	}
	base := "."
	if path != "-" {
		base = filepath.Dir(path)
	}
	jobs := make([]*api.Job, 0, len(docs))
	for i, d := range docs {
		where := whereDoc(i)
		j, err := api.DecodeJob(d)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if wd := j.Spec.WorkingDir; wd != "" && !filepath.IsAbs(wd) {
			abs, err := filepath.Abs(filepath.Join(base, wd))
			if err != nil {
				return nil, fmt.Errorf("%s: spec.workingDir: %w", where, err)
			}
			if st, err := os.Stat(abs); err != nil || !st.IsDir() {
				return nil, fmt.Errorf("%s: spec.workingDir: %s is not a directory here", where, abs)
			}
			j.Spec.WorkingDir = abs
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// readFiles reads the objects of each file in turn with read, in order.
func readFiles[T any](files []string, stdin io.Reader, read func(path string, stdin io.Reader) ([]*T, error)) ([]*T, error) {
	var all []*T
	for _, f := range files {
		xs, err := read(f, stdin)
		if err != nil {
			return nil, err
		}
		all = append(all, xs...)
	}
	return all, nil
}

// readDocuments reads the YAML or JSON documents of a file ("-": stdin),
// at least one. where(i) names document i in errors: the file alone when
// it holds one, else the file and the document's number.
func readDocuments(path string, stdin io.Reader, kind string) (docs [][]byte, where func(i int) string, err error) {
	var data []byte
	label := path
	if path == "-" {
		label = "standard input"
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, nil, err
	}
	docs, err = splitDocuments(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", label, err)
	}
	if len(docs) == 0 {
		return nil, nil, fmt.Errorf("%s: no %s in it", label, kind)
	}
	where = func(i int) string {
		if len(docs) > 1 {
			return fmt.Sprintf("%s (document %d)", label, i+1)
		}
		return label
	}
	return docs, where, nil
}

// splitDocuments cuts a YAML stream at "---"; JSON is one document.
func splitDocuments(data []byte) ([][]byte, error) {
	t := bytes.TrimSpace(data)
	if len(t) == 0 {
		return nil, nil
	}
	if t[0] == '{' {
		return [][]byte{t}, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs [][]byte
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		if len(n.Content) == 0 || (n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null") {
			continue // an empty document ("---" at the end)
		}
		b, err := yaml.Marshal(&n)
		if err != nil {
			return nil, err
		}
		docs = append(docs, b)
	}
}

// gangSummary says what a job asks for: "1 GPU", "2 x 4 GPUs (8)".
func gangSummary(j *api.Job) string {
	g := j.Spec.GPUsPerReplica
	unit := "GPU"
	if g != 1 {
		unit = "GPUs"
	}
	if j.Spec.Replicas == 1 {
		return fmt.Sprintf("%d %s", g, unit)
	}
	return fmt.Sprintf("%d x %d %s (%d)", j.Spec.Replicas, g, unit, jobGPUs(j))
}

// waitJobs follows jobs until every one has ended, writing each change of
// phase to w, and returns their last state.
func waitJobs(ctx context.Context, c *client.Client, jobs []*api.Job, w io.Writer) ([]*api.Job, error) {
	last := make([]*api.Job, len(jobs))
	copy(last, jobs)
	seen := make([]string, len(jobs))
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		done := 0
		for i, j := range last {
			if !j.Status.Phase.Terminal() {
				nj, err := c.Job(ctx, j.Metadata.ID)
				if err != nil {
					if ctx.Err() != nil {
						return last, waitErr(ctx)
					}
					return last, err
				}
				last[i] = nj
			}
			j = last[i]
			if line := phaseLine(j); line != seen[i] {
				seen[i] = line
				fmt.Fprintln(w, line)
			}
			if j.Status.Phase.Terminal() {
				done++
			}
		}
		if done == len(last) {
			return last, nil
		}
		select {
		case <-ctx.Done():
			return last, waitErr(ctx)
		case <-tick.C:
		}
	}
}

func waitErr(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return errors.New("--timeout passed before the jobs ended")
	}
	return errors.New("stopped waiting (the jobs go on)")
}

// phaseLine is one line of progress: "j1 (hello) Running: 1 GPU on node-1".
func phaseLine(j *api.Job) string {
	s := fmt.Sprintf("job %s (%s) %s", j.Metadata.ID, j.Metadata.Name, j.Status.Phase)
	switch j.Status.Phase {
	case api.PhaseRunning:
		if p := j.Status.Placement; p != nil {
			s += ": " + placementSummary(p)
		}
		if j.Status.Restarts > 0 {
			s += fmt.Sprintf(" (restart %d)", j.Status.Restarts)
		}
	case api.PhaseSucceeded:
		if !j.Status.StartedAt.IsZero() && !j.Status.FinishedAt.IsZero() {
			s += " in " + j.Status.FinishedAt.Sub(j.Status.StartedAt).Round(100*time.Millisecond).String()
		}
	default:
		if j.Status.Reason != "" {
			s += ": " + j.Status.Reason
		}
	}
	return s
}

// placementSummary: "2 GPUs on node-1" or "16 GPUs on 2 nodes, 1 leaf".
func placementSummary(p *api.Placement) string {
	unit := "GPUs"
	if p.GPUs == 1 {
		unit = "GPU"
	}
	if p.Nodes == 1 && len(p.Groups) == 1 {
		return fmt.Sprintf("%d %s on %s", p.GPUs, unit, p.Groups[0].Hosts)
	}
	leaves := "leaves"
	if p.Leaves == 1 {
		leaves = "leaf"
	}
	return fmt.Sprintf("%d %s on %d nodes, %d %s", p.GPUs, unit, p.Nodes, p.Leaves, leaves)
}
