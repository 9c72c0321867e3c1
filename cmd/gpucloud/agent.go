package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"gpucloud/internal/agent"
	"gpucloud/internal/agent/gpu"
	"gpucloud/internal/agent/health"
	"gpucloud/internal/agent/ib"
	"gpucloud/internal/agent/launch"
)

func init() { extraCommands = append(extraCommands, newAgentCmd) }

// agentVersion is reported at registration.
var agentVersion = "dev"

func newAgentCmd() *cobra.Command {
	var cfg agent.Config
	var servers, tokenFile, logLevel string
	var rankEnv []string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: GPU discovery, health, and the ranks of distributed jobs",
		Long: `Run the node agent of one GPU server.

It finds the GPUs through NVML (or declares emulated ones with --fake-gpus on a
machine without a GPU) and the InfiniBand HCAs in /sys/class/infiniband,
registers the node with the control plane, keeps its lease alive with
heartbeats, runs health checks that cordon the node with the reason, starts
the ranks the control plane assigns as real processes (each in its own
process group and working directory, with torchrun's, DeepSpeed's and NCCL's
environment), tears gangs down (SIGTERM, --grace-period, SIGKILL), reports
starts and exits, and relays the ranks' logs.

The ranks run under "gpucloud agent shim" and outlive the agent: a restarted
agent on the same --data-dir finds them again (or reports them lost) and
never starts a job generation twice. Run it under systemd with
KillMode=process so that restarting the agent does not kill the ranks.`,
		Example: `  gpucloud agent --server http://10.0.0.1:8080 --token-file /etc/gpucloud/agent.token
  gpucloud agent --server http://127.0.0.1:8080 --token $TOKEN --node-name dev-1 --fake-gpus 8 --gpu-model H100-80GB --data-dir /tmp/agent`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := agentLogger(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			if err := agentToken(&cfg, tokenFile); err != nil {
				return err
			}
			cfg.Servers = strings.Split(servers, ",")
			if servers == "" {
				return errors.New("--server is required")
			}
			if cfg.RankEnv, err = agentEnvFlags(rankEnv); err != nil {
				return err
			}
			if cfg.Shim, err = agentShim(); err != nil {
				return err
			}
			cfg.Version, cfg.Log = agentVersion, log
			a, err := agent.New(cfg)
			if err != nil {
				if errors.Is(err, gpu.ErrNoGPU) {
					return &exitError{code: 3, err: err}
				}
				return err
			}
			inv, hcas := a.Inventory()
			log.Info("node", "gpus", len(inv.Devices), "model", inv.Model(), "source", inv.Source, "driver", inv.DriverVersion, "hcas", len(hcas), "rails", ib.Rails(hcas))
			ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer cancel()
			return a.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&servers, "server", "", "control plane URL(s), comma-separated")
	f.StringVar(&cfg.Token, "token", "", "agent token (or $GPUCLOUD_TOKEN, or --token-file)")
	f.StringVar(&tokenFile, "token-file", "", "file holding the agent token")
	f.StringVar(&cfg.NodeName, "node-name", "", "node name (default: the hostname)")
	f.StringVar(&cfg.Address, "address", "", "address other nodes reach this one at (default: the local address of the route to the server)")
	f.StringVar(&cfg.DataDir, "data-dir", agent.DefaultDataDir, "state, rank logs and working directories")
	f.StringVar(&cfg.CheckpointRoot, "checkpoint-root", "", "parent of each job's GPUCLOUD_CHECKPOINT_DIR (default <data-dir>/checkpoints; use a shared filesystem so restarts can move)")
	agentGPUFlags(cmd, &cfg)
	f.StringVar(&cfg.HealthScript, "health-script", "", "operator health check (exit 0: healthy; the last ERROR line is the cordon reason), as Azure's aznhc or LBNL NHC")
	f.DurationVar(&cfg.HealthInterval, "health-interval", time.Minute, "how often the health checks run")
	f.DurationVar(&cfg.HealthTimeout, "health-timeout", time.Minute, "time limit of the health script")
	f.StringVar(&cfg.Place.Leaf, "leaf", "", "leaf switch domain of this node, when the server's fabric does not list it")
	f.StringVar(&cfg.Place.Block, "block", "", "block (spine group) of this node, when the server's fabric does not list it")
	f.StringVar(&cfg.NCCLTopoFile, "nccl-topo-file", "", "NCCL topology XML of this node (sets NCCL_TOPO_FILE for every rank)")
	f.StringArrayVar(&rankEnv, "rank-env", nil, "KEY=VALUE added to every rank's environment (GLOO_SOCKET_IFNAME=eth0, NCCL_SOCKET_IFNAME=...); repeatable")
	f.DurationVar(&cfg.GracePeriod, "grace-period", 30*time.Second, "time between SIGTERM and SIGKILL when a gang is torn down")
	f.IntVar(&cfg.LogMaxMB, "log-max-mb", 100, "rotate each rank's log at this size (MiB)")
	f.IntVar(&cfg.LogMaxFiles, "log-max-files", 5, "rotated logs kept per rank")
	f.IntVar(&cfg.PrestartShims, "prestart-shims", 0, "idle rank supervisors kept ready once the node has run a job, so ranks start without waiting for one (0: one per GPU; negative: none)")
	f.DurationVar(&cfg.FenceAfter, "fence-after", 0, "tear gangs down after this long without an accepted heartbeat (default: the lease TTL; negative: never)")
	f.StringVar(&cfg.IBRoot, "ib-root", ib.DefaultRoot, "where the InfiniBand devices are listed")
	f.MarkHidden("ib-root")
	f.StringVar(&logLevel, "log-level", "info", "debug|info|warn|error")
	cmd.AddCommand(newAgentShimCmd(), newAgentDiscoverCmd())
	return cmd
}

func agentGPUFlags(cmd *cobra.Command, cfg *agent.Config) {
	cmd.Flags().IntVar(&cfg.FakeGPUs, "fake-gpus", 0, "declare N emulated GPUs instead of NVML (machines without a GPU); shown as emulated everywhere")
	cmd.Flags().StringVar(&cfg.GPUModel, "gpu-model", "", "model of the emulated GPUs, e.g. H100-80GB")
}

// newAgentShimCmd is the rank supervisor the agent starts for each rank.
func newAgentShimCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "shim [flags] -- command args...",
		Short:              "Supervise one rank (started by the agent)",
		Hidden:             true,
		DisableFlagParsing: true,
		Run: func(_ *cobra.Command, args []string) {
			os.Exit(launch.RunShim(args))
		},
	}
}

// newAgentDiscoverCmd prints what the agent would register, and the health.
func newAgentDiscoverCmd() *cobra.Command {
	var cfg agent.Config
	var asJSON bool
	var script string
	cmd := &cobra.Command{
		Use:   "discover",
		Short: "Print the GPUs (NVML or emulated), the InfiniBand HCAs and the health checks' verdict",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var src gpu.Source
			var err error
			if cfg.FakeGPUs > 0 {
				src, err = gpu.NewEmulated(cfg.FakeGPUs, cfg.GPUModel, "discover")
			} else {
				src, err = gpu.OpenDefault(slog.New(slog.DiscardHandler))
			}
			if err != nil {
				if errors.Is(err, gpu.ErrNoGPU) {
					return &exitError{code: 3, err: err}
				}
				return err
			}
			defer src.Close()
			var sc *health.Script
			if script != "" {
				sc = &health.Script{Path: script}
				if err := sc.Validate(); err != nil {
					return err
				}
			}
			c, err := health.NewChecker(src, ib.DefaultRoot, sc)
			if err != nil {
				return err
			}
			inv, hcas := c.Baseline()
			rep := c.Check(cmd.Context())
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					GPUs   gpu.Inventory `json:"gpus"`
					HCAs   []ib.HCA      `json:"hcas"`
					Rails  []string      `json:"rails"`
					Health health.Report `json:"health"`
				}{inv, hcas, ib.Rails(hcas), rep})
			}
			fmt.Fprintf(out, "GPUs (%s", inv.Source)
			if inv.DriverVersion != "" {
				fmt.Fprintf(out, ", driver %s, CUDA %s", inv.DriverVersion, inv.CUDAVersion)
			}
			fmt.Fprintf(out, "): %d\n", len(inv.Devices))
			for _, d := range inv.Devices {
				emu := ""
				if d.Emulated {
					emu = "  (emulated)"
				}
				fmt.Fprintf(out, "  %d  %s  %s  %d MiB  pci %s  nvlinks %d up %d down  ecc-uncorrected %d%s\n",
					d.Index, d.UUID, d.Model, d.MemoryMiB, orDash(d.PCIBusID), d.NVLinks, d.NVLinksDown, d.ECCUncorrected, emu)
			}
			fmt.Fprintf(out, "InfiniBand HCAs: %d\n", len(hcas))
			for _, h := range hcas {
				for _, p := range h.Ports {
					fmt.Fprintf(out, "  %s/%d  %s  %s  %s\n", h.Name, p.Num, p.State, p.Rate, p.LinkLayer)
				}
			}
			if rep.Healthy() {
				fmt.Fprintln(out, "health: ok")
				return nil
			}
			fmt.Fprintln(out, "health:", rep.Reason())
			return &exitError{code: 4, err: errors.New("unhealthy: " + rep.Reason())}
		},
	}
	agentGPUFlags(cmd, &cfg)
	cmd.Flags().StringVar(&script, "health-script", "", "also run this health script")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func agentLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// agentToken takes the token from --token, --token-file or $GPUCLOUD_TOKEN.
func agentToken(cfg *agent.Config, file string) error {
	if file != "" {
		if cfg.Token != "" {
			return errors.New("--token and --token-file exclude each other")
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		cfg.Token = strings.TrimSpace(string(b))
	}
	if cfg.Token == "" {
		cfg.Token = os.Getenv("GPUCLOUD_TOKEN")
	}
	if cfg.Token == "" {
		return errors.New("an agent token is required: --token, --token-file or $GPUCLOUD_TOKEN")
	}
	return nil
}

var agentEnvKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func agentEnvFlags(kvs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--rank-env %q: want KEY=VALUE", kv)
		}
		if !agentEnvKey.MatchString(k) {
			return nil, fmt.Errorf("--rank-env %q: %q is not a variable name", kv, k)
		}
		out[k] = v
	}
	return out, nil
}

// agentShim is how the agent starts a rank's supervisor: this very binary.
func agentShim() ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the gpucloud binary for the rank shim: %w", err)
	}
	return []string{exe, "agent", "shim"}, nil
}
