package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"gpucloud/internal/server"
	"gpucloud/internal/store"
	"gpucloud/internal/topology"
)

func init() {
	extraCommands = append(extraCommands, newServerCmd, newEtcdCmd)
}

func newLogger(cmd *cobra.Command, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: l})), nil
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func newServerCmd() *cobra.Command {
	var cfg server.Config
	var endpoints, fabricPath, preset, logLevel string
	var fabricIn fabricInput
	var gpus, txnOps int
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane: the API, the scheduler and the reconcilers, on etcd",
		Long: `Run a replica of the gpucloud control plane.

By default it starts an embedded single-member etcd in --data-dir, so one
command makes a working control plane; the first start writes an admin
token to <data-dir>/admin.token (mode 0600). With --etcd-endpoints it uses
an external etcd cluster instead: run several replicas on one cluster for
high availability (one schedules, all serve the API).

The scheduler places jobs on the fabric given by --fabric or --preset plus
every node an agent registers; registered nodes the fabric does not list
hang from a leaf named "local".`,
		Example: `  gpucloud server --data-dir /var/lib/gpucloud --preset ndv5 --gpus 1024
  gpucloud server --etcd-endpoints http://10.0.0.1:2379,http://10.0.0.2:2379 --fabric topology.conf --listen :8443 --tls-cert c.pem --tls-key k.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger(cmd, logLevel)
			if err != nil {
				return err
			}
			if endpoints != "" {
				cfg.EtcdEndpoints = strings.Split(endpoints, ",")
			}
			switch {
			case fabricPath != "" && preset != "":
				return errors.New("--fabric and --preset exclude each other")
			case fabricPath != "":
				f, _, err := fabricIn.load(fabricPath)
				if err != nil {
					return err
				}
				cfg.Fabric = f
			case preset != "":
				if gpus <= 0 {
					return errors.New("--preset needs --gpus")
				}
				f, err := topology.Generate(preset, gpus)
				if err != nil {
					return err
				}
				cfg.Fabric = f
			}
			cfg.TxnOps = txnOps
			cfg.Logger = log
			if dashboardHandler != nil { // linked in by up_web.go
				cfg.Dashboard = dashboardHandler()
			}
			s, err := server.New(cfg)
			if err != nil {
				return err
			}
			ctx, cancel := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer cancel()
			return s.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", ":8080", "API address")
	f.StringVar(&cfg.DataDir, "data-dir", "gpucloud-data", "directory for the embedded etcd and admin.token")
	f.StringVar(&endpoints, "etcd-endpoints", "", "external etcd cluster (comma-separated URLs) instead of the embedded member")
	f.StringVar(&cfg.EtcdClientURL, "etcd-client-url", "http://127.0.0.1:2379", "client URL of the embedded etcd")
	f.StringVar(&cfg.EtcdPeerURL, "etcd-peer-url", "http://127.0.0.1:2380", "peer URL of the embedded etcd")
	f.StringVar(&fabricPath, "fabric", "", "fabric description (any format `gpucloud topology validate` reads)")
	fabricIn.flags(cmd, "format")
	f.StringVar(&preset, "preset", "", "generated fabric: "+strings.Join(topology.PresetNames(), "|"))
	f.IntVar(&gpus, "gpus", 0, "GPUs of the --preset fabric")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "TLS certificate (PEM)")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "TLS key (PEM)")
	f.DurationVar(&cfg.NodeLeaseTTL, "node-lease-ttl", 30*time.Second, "a node without heartbeat for this long is Down and its gangs requeued")
	f.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", 10*time.Second, "heartbeat interval told to agents")
	f.IntVar(&cfg.LeaderTTL, "leader-ttl", 5, "seconds before a dead leader's scheduler role moves to another replica")
	f.DurationVar(&cfg.CycleInterval, "cycle-interval", 100*time.Millisecond, "scheduling loop period")
	f.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", 1<<20, "largest request body")
	f.IntVar(&txnOps, "txn-ops", 128, "operations per etcd transaction (etcd's --max-txn-ops)")
	f.StringVar(&cfg.ID, "replica-id", "", "name of this replica in the leader election (default host/address)")
	f.StringVar(&cfg.AdvertiseURL, "advertise-url", "", "URL the other replicas reach this one's API at, to forward deployment traffic to the leader (default: scheme and --listen, the host name for an address of every interface)")
	f.StringVar(&logLevel, "log-level", "info", "debug|info|warn|error")
	f.BoolVar(&cfg.Pprof, "pprof", false, "serve /debug/pprof/ to admin tokens")
	f.DurationVar(&cfg.JobRetention, "job-retention", 7*24*time.Hour, "delete jobs (with logs) this long after they finish; 0 keeps them")
	f.BoolVar(&cfg.NoFsync, "unsafe-no-fsync", false, "run the embedded etcd without fsync (tests only: loses data on power loss)")
	f.MarkHidden("unsafe-no-fsync")
	return cmd
}

func newEtcdCmd() *cobra.Command {
	var mc store.MemberConfig
	cmd := &cobra.Command{
		Use:   "etcd",
		Short: "Run one etcd member (for a highly available control plane without an etcd binary)",
		Long: `Run one member of an etcd cluster inside the gpucloud binary. Three
members on three machines, then 'gpucloud server --etcd-endpoints' on each,
make a control plane that survives the loss of any one machine.`,
		Example: `  gpucloud etcd --name m1 --data-dir /var/lib/gpucloud-etcd \
    --client-url http://10.0.0.1:2379 --peer-url http://10.0.0.1:2380 \
    --initial-cluster m1=http://10.0.0.1:2380,m2=http://10.0.0.2:2380,m3=http://10.0.0.3:2380`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := signalContext()
			defer cancel()
			e, err := store.StartMember(ctx, mc)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "etcd member %s serving %s\n", mc.Name, mc.ClientURL)
			select {
			case <-ctx.Done():
			case err = <-e.Etcd.Err():
			}
			e.Close()
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&mc.Name, "name", "default", "member name")
	f.StringVar(&mc.Dir, "data-dir", "gpucloud-etcd", "data directory")
	f.StringVar(&mc.ClientURL, "client-url", "http://127.0.0.1:2379", "client URL (listen and advertise)")
	f.StringVar(&mc.PeerURL, "peer-url", "http://127.0.0.1:2380", "peer URL (listen and advertise)")
	f.StringVar(&mc.InitialCluster, "initial-cluster", "", "name=peerURL,... of every member (empty: a single member)")
	f.BoolVar(&mc.Existing, "existing", false, "join an existing cluster")
	f.BoolVar(&mc.NoFsync, "unsafe-no-fsync", false, "no fsync (tests only)")
	f.MarkHidden("unsafe-no-fsync")
	return cmd
}
