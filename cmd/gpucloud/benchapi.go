package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"gpucloud/internal/client/apibench"
)

func init() {
	benchSubcommands = append(benchSubcommands, newBenchAPICmd)
}

func newBenchAPICmd() *cobra.Command {
	var o apibench.Options
	var server, tokenFile string
	var asJSON, keep bool
	cmd := &cobra.Command{
		Use:   "api",
		Short: "Load a running control plane: job submissions, then simulated agents heartbeating",
		Long: `Measures a running gpucloud server over HTTP. First --jobs submissions by
--concurrency clients (throughput and latency); then --agents simulated node
agents register and heartbeat every --interval for --duration, while a probe
reads the API at --probe-rate requests/s: heartbeat and API latency. The
bench's jobs and nodes are cancelled and deleted afterwards unless --keep.
Run it against a server of its own: the load is real.`,
		Example: `  gpucloud bench api --server http://127.0.0.1:8080 --token $(cat gpucloud-data/admin.token) --jobs 20000 --agents 10000 --json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Token == "" && tokenFile != "" {
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return err
				}
				o.Token = strings.TrimSpace(string(b))
			}
			if o.Token == "" {
				o.Token = os.Getenv("GPUCLOUD_TOKEN")
			}
			o.Servers = strings.Split(server, ",")
			o.Cleanup = !keep
			if !asJSON {
				o.Progress = func(format string, args ...any) { fmt.Fprintf(cmd.ErrOrStderr(), format+"\n", args...) }
			}
			ctx, cancel := signalContext()
			defer cancel()
			r, err := apibench.Run(ctx, o)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), r)
			}
			printAPIBench(cmd.OutOrStdout(), r)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&server, "server", "http://127.0.0.1:8080", "API URL(s), comma-separated")
	f.StringVar(&o.Token, "token", "", "bearer token (admin for --agents; default $GPUCLOUD_TOKEN)")
	f.StringVar(&tokenFile, "token-file", "", "read the token from a file")
	f.IntVar(&o.Jobs, "jobs", 10000, "jobs to submit (0: skip)")
	f.IntVar(&o.Concurrency, "concurrency", 64, "concurrent clients")
	f.IntVar(&o.Agents, "agents", 0, "simulated agents (0: skip)")
	f.IntVar(&o.AgentGPUs, "agent-gpus", 8, "GPUs each simulated node reports")
	f.DurationVar(&o.Interval, "interval", 10*time.Second, "heartbeat interval of each agent")
	f.DurationVar(&o.Duration, "duration", 30*time.Second, "length of the heartbeat phase")
	f.IntVar(&o.ProbeRate, "probe-rate", 50, "API reads per second during the heartbeat phase")
	f.BoolVar(&keep, "keep", false, "leave the bench's jobs and nodes in place")
	f.BoolVar(&asJSON, "json", false, "print the figures as JSON")
	return cmd
}

func printAPIBench(w io.Writer, r *apibench.Result) {
	fmt.Fprintf(w, "server %s (%d CPUs here)\n", strings.Join(r.Servers, ","), r.CPUs)
	if r.Jobs > 0 {
		fmt.Fprintf(w, "submissions: %d jobs by %d clients in %.1fs: %.0f/s, p50 %.1f ms, p99 %.1f ms, %d errors\n",
			r.Jobs, r.Concurrency, r.SubmitPhaseSecs, r.SubmissionsPerS, r.SubmitP50Ms, r.SubmitP99Ms, r.SubmitErrors)
	}
	if r.Agents > 0 {
		fmt.Fprintf(w, "agents: %d registered at %.0f/s; heartbeats every %.0fs: %.0f/s, p50 %.1f ms, p99 %.1f ms, %d errors, %d late\n",
			r.Agents, r.RegisterPerS, r.HeartbeatEveryS, r.HeartbeatsPerS, r.HeartbeatP50Ms, r.HeartbeatP99Ms, r.HeartbeatErrors, r.HeartbeatsLate)
		fmt.Fprintf(w, "API during heartbeats: %d requests, p50 %.1f ms, p99 %.1f ms, %d errors\n", r.APIRequests, r.APIP50Ms, r.APIP99Ms, r.APIErrors)
	}
}
