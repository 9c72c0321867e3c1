package store

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// MemberConfig describes one etcd member run inside this process.
type MemberConfig struct {
	Dir  string // data directory (created)
	Name string // member name (default "default")
	// ClientURL and PeerURL are http://127.0.0.1:port URLs (defaults:
	// 127.0.0.1:2379 and 127.0.0.1:2380).
	ClientURL string
	PeerURL   string
	// InitialCluster is "name=peerURL,..." for a multi-member cluster;
	// empty for a single member.
	InitialCluster string
	// Existing joins a cluster that already exists (restart of a member of
	// a cluster whose data directory is new is not supported).
	Existing bool
	// NoFsync trades durability for speed; tests only.
	NoFsync bool
	// MaxTxnOps raises etcd's limit on operations per transaction (default
	// 1024 here, etcd's own default is 128).
	MaxTxnOps uint
}

// Embedded is an etcd member running in this process.
type Embedded struct {
	Etcd      *embed.Etcd
	Endpoints []string
}

// StartEmbedded starts a single-member etcd in dir on loopback ports and
// waits until it serves. clientURL may be empty (127.0.0.1:2379).
func StartEmbedded(ctx context.Context, dir string) (*Embedded, error) {
	return StartMember(ctx, MemberConfig{Dir: dir})
}

// StartMember starts one etcd member and waits until it is ready (for a
// multi-member cluster: until it has joined a quorum).
func StartMember(ctx context.Context, mc MemberConfig) (*Embedded, error) {
	if mc.Name == "" {
		mc.Name = "default"
	}
	if mc.ClientURL == "" {
		mc.ClientURL = "http://127.0.0.1:2379"
	}
	if mc.PeerURL == "" {
		mc.PeerURL = "http://127.0.0.1:2380"
	}
	if mc.MaxTxnOps == 0 {
		mc.MaxTxnOps = 1024
	}
	if err := os.MkdirAll(mc.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	cu, err := url.Parse(mc.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("etcd: client URL %q: %w", mc.ClientURL, err)
	}
	pu, err := url.Parse(mc.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("etcd: peer URL %q: %w", mc.PeerURL, err)
	}
	cfg := embed.NewConfig()
	cfg.Name = mc.Name
	cfg.Dir = filepath.Join(mc.Dir, "etcd")
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = mc.Name + "=" + mc.PeerURL
	if mc.InitialCluster != "" {
		cfg.InitialCluster = mc.InitialCluster
	}
	cfg.InitialClusterToken = "gpucloud"
	if mc.Existing {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(errorLogger())
	cfg.UnsafeNoFsync = mc.NoFsync
	cfg.MaxTxnOps = mc.MaxTxnOps
	cfg.MaxRequestBytes = 4 << 20
	// Keep five minutes of history for watches that reconnect (what the
	// Kubernetes API server keeps); older revisions are compacted so that
	// the database stays small under a thousand writes a second.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "5m"
	cfg.QuotaBackendBytes = 8 << 30

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd: start member %s in %s: %w", mc.Name, mc.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd: member %s: %w", mc.Name, err)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("etcd: member %s not ready: %w", mc.Name, ctx.Err())
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("etcd: member %s not ready after 60s (quorum lost?)", mc.Name)
	}
	return &Embedded{Etcd: e, Endpoints: []string{mc.ClientURL}}, nil
}

// Close stops the member.
func (e *Embedded) Close() { e.Etcd.Close() }
