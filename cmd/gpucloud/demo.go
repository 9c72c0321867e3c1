package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"gpucloud/examples"
	"gpucloud/internal/api"
	"gpucloud/internal/client"
)

func init() { extraCommands = append(extraCommands, newDemoCmd) }

func newDemoCmd() *cobra.Command {
	var o upOptions
	var dir string
	var keep bool
	var timeout time.Duration
	var cn *conn
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run every example job end to end (starting `gpucloud up` if nothing runs)",
		Long: `Submit the example jobs (one GPU, PyTorch DDP under torchrun, a
DeepSpeed-style job reading its hostfile, an MPI job), follow them until they
end, and print how each went and where to look next.

It uses the gpucloud the CLI is set up for (~/.gpucloud/config, --server,
$GPUCLOUD_SERVER). When none answers it starts one here, as ` + "`gpucloud up`" + `
does (same flags), and stops it cleanly once the examples are done (--keep
leaves it running); the jobs stay in its data directory, so a later
` + "`gpucloud up`" + ` shows them.

Examples whose needs are missing are skipped with the reason: the DDP job
needs PyTorch for /usr/bin/python3 (or the job's PYTHON), the MPI job needs
mpirun. The examples come from ./examples when run in a gpucloud checkout,
else from the binary (written to <data-dir>/examples).`,
		Example: `  gpucloud demo
  gpucloud demo --keep
  gpucloud demo --data-dir /tmp/gpucloud-demo --listen 127.0.0.1:9090`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.fakeSet = cmd.Flags().Changed("fake-gpus")
			out, errw := cmd.OutOrStdout(), cmd.ErrOrStderr()
			ctx, stopping := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stopping()

			var u *upInstance
			c, err := cn.client()
			if err == nil {
				if _, werr := c.Whoami(ctx); werr != nil {
					if client.IsCode(werr, 401) || client.IsCode(werr, 403) {
						return cn.explain(werr, "")
					}
					err = werr
				}
			}
			if err == nil {
				fmt.Fprintf(out, "Using the gpucloud at %s.\n\n", cn.url)
			} else {
				fmt.Fprintf(out, "No gpucloud answers (%s): starting one here, as `gpucloud up` does.\n", oneLine(cn.explain(err, "").Error(), 100))
				if u, err = startUp(ctx, &o, errw); err != nil {
					return err
				}
				u.printBanner(out, false)
				fmt.Fprintln(out)
				c = u.admCli
			}
			exDir, err := demoExamples(dir, u, o.dataDir)
			if err != nil {
				return err
			}
			hint := "Look closer:"
			if u != nil && !keep {
				hint = "Look closer (after `gpucloud up`, in another terminal):"
			}
			runErr := runDemo(ctx, c, exDir, timeout, out, hint)
			if u == nil {
				return runErr
			}
			if runErr != nil {
				fmt.Fprintln(errw, "error:", runErr)
			}
			if !keep || ctx.Err() != nil {
				if ctx.Err() == nil {
					fmt.Fprintln(out)
				}
				hard, cancel := secondSignal(time.Second)
				defer cancel()
				if err := u.stop(hard, out); err != nil {
					return err
				}
				if ctx.Err() == nil {
					fmt.Fprintln(out, "`gpucloud up` starts it again with these jobs (`gpucloud demo --keep` would have left it running).")
				}
				return runErr
			}
			fmt.Fprintln(out, "\ngpucloud is still up for you to explore, in another terminal; Ctrl-C stops it.")
			if err := u.serveUntil(ctx, errw); err != nil {
				return err
			}
			return runErr
		},
	}
	addUpFlags(cmd, &o)
	f := cmd.Flags()
	f.StringVar(&dir, "examples", "", "directory of the examples (default ./examples in a checkout, else the binary's own copy)")
	f.BoolVar(&keep, "keep", false, "leave the gpucloud the demo started running once the examples are done")
	f.DurationVar(&timeout, "timeout", 5*time.Minute, "give up on the examples after this long")
	cn = addConnFlags(cmd)
	return cmd
}

// demoExamples finds the examples: --examples, ./examples, or the copy in
// the binary written under the data directory.
func demoExamples(dir string, u *upInstance, dataDir string) (string, error) {
	if dir != "" {
		return filepath.Abs(dir)
	}
	if _, err := os.Stat(filepath.Join("examples", "hello", "job.yaml")); err == nil {
		return filepath.Abs("examples")
	}
	base := dataDir
	if u != nil {
		base = u.dir
	}
	base, err := expandHome(base)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(base, "examples")
	err = fs.WalkDir(examples.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dst, p)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := examples.FS.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		return "", fmt.Errorf("writing the examples to %s: %w", dst, err)
	}
	return dst, nil
}

// demoJob is one example to run.
type demoJob struct {
	name string
	job  *api.Job
	skip string // why it does not run here
}

// runDemo submits the examples that can run here, follows them, and
// prints a summary. It fails when one of them did not succeed.
func runDemo(ctx context.Context, c *client.Client, dir string, timeout time.Duration, out io.Writer, hint string) error {
	var todo []*demoJob
	for _, name := range examples.Jobs {
		jobs, err := readJobFile(filepath.Join(dir, name, "job.yaml"), nil)
		if err != nil {
			return err
		}
		d := &demoJob{name: name, job: jobs[0]}
		d.skip = demoMissing(d.job)
		todo = append(todo, d)
	}
	fmt.Fprintf(out, "Submitting the examples in %s:\n", dir)
	var live []*api.Job
	for _, d := range todo {
		if d.skip != "" {
			fmt.Fprintf(out, "  %-10s skipped: %s\n", d.name, d.skip)
			continue
		}
		j, err := c.Submit(ctx, d.job)
		if err != nil {
			return fmt.Errorf("submitting %s: %w", d.name, err)
		}
		d.job = j
		live = append(live, j)
		fmt.Fprintf(out, "  %-10s job %s: %s\n", d.name, j.Metadata.ID, gangSummary(j))
	}
	if len(live) == 0 {
		return errors.New("no example can run here")
	}
	fmt.Fprintln(out, "\nFollowing them (`gpucloud get jobs -w` shows the same):")
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	final, werr := waitJobs(wctx, c, live, indent(out, "  "))
	byID := map[string]*api.Job{}
	for _, j := range final {
		byID[j.Metadata.ID] = j
	}
	fmt.Fprintln(out, "\nHow they ended (the last line of rank 0):")
	t := newTable(out, "  EXAMPLE", "JOB", "PHASE", "TIME", "OUTPUT")
	failed := 0
	for _, d := range todo {
		if d.skip != "" {
			t.row("  "+d.name, "", "skipped", "", oneLine(d.skip, 70))
			continue
		}
		j := byID[d.job.Metadata.ID]
		took := ""
		if !j.Status.StartedAt.IsZero() && !j.Status.FinishedAt.IsZero() {
			took = j.Status.FinishedAt.Sub(j.Status.StartedAt).Round(100 * time.Millisecond).String()
		}
		if j.Status.Phase != api.PhaseSucceeded {
			failed++
		}
		t.row("  "+d.name, j.Metadata.ID, string(j.Status.Phase), took, oneLine(lastLogLine(ctx, c, j.Metadata.ID), 90))
	}
	t.flush()
	first := live[0].Metadata.ID
	fmt.Fprintf(out, "\n%s\n  gpucloud get jobs\n  gpucloud describe job %s\n  gpucloud logs %s\n  gpucloud top\n", hint, first, first)
	if werr != nil {
		return werr
	}
	if failed > 0 {
		return &exitError{code: 2, err: fmt.Errorf("%d example(s) did not succeed: `gpucloud describe job ID` tells why", failed)}
	}
	return nil
}

// demoMissing says what an example needs and this machine lacks.
func demoMissing(j *api.Job) string {
	cmd := strings.Join(j.Spec.Command, " ")
	if strings.Contains(cmd, "torch") {
		py := j.Spec.Env["PYTHON"]
		if py == "" {
			py = "/usr/bin/python3"
		}
		if err := exec.Command(py, "-c", "import torch").Run(); err != nil {
			return fmt.Sprintf("needs PyTorch: %s cannot import torch (Debian: apt-get install python3-torch)", py)
		}
	}
	if strings.Contains(cmd, "mpirun") {
		if _, err := exec.LookPath("mpirun"); err != nil {
			return "needs mpirun, which is not on PATH (Debian: apt-get install openmpi-bin)"
		}
	}
	return ""
}

// lastLogLine is the last non-empty line of rank 0's output.
func lastLogLine(ctx context.Context, c *client.Client, id string) string {
	rc, err := c.Logs(ctx, id, 0, false)
	if err != nil {
		return ""
	}
	defer rc.Close()
	b, _ := io.ReadAll(io.LimitReader(rc, 1<<20))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if s := strings.TrimSpace(lines[i]); s != "" {
			return s
		}
	}
	return ""
}

// indent prefixes every line written to w.
func indent(w io.Writer, prefix string) io.Writer {
	return &indenter{w: w, prefix: prefix, bol: true}
}

type indenter struct {
	w      io.Writer
	prefix string
	bol    bool
}

func (in *indenter) Write(p []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(p), "\n") {
		if line == "" {
			continue
		}
		if in.bol {
			if _, err := io.WriteString(in.w, in.prefix); err != nil {
				return 0, err
			}
		}
		if _, err := io.WriteString(in.w, line); err != nil {
			return 0, err
		}
		in.bol = strings.HasSuffix(line, "\n")
	}
	return len(p), nil
}
