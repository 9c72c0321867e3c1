package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
	"gpucloud/internal/store"
	"gpucloud/internal/testnet"
)

func quietLogger() *slog.Logger {
	if os.Getenv("GPUCLOUD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testServer struct {
	*Server
	url   string
	admin *client.Client
	token string
	dir   string
	stop  func()
}

// startServer runs a real server on a real single-member etcd (fsync off:
// a test) on loopback ports.
func startServer(t testing.TB, mod func(*Config)) *testServer {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{
		Listen: "127.0.0.1:0", DataDir: dir, NoFsync: true,
		EtcdClientURL: fmt.Sprintf("http://127.0.0.1:%d", testnet.FreePort(t)),
		EtcdPeerURL:   fmt.Sprintf("http://127.0.0.1:%d", testnet.FreePort(t)),
		CycleInterval: 20 * time.Millisecond,
		Logger:        quietLogger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("server did not stop")
		}
	}
	t.Cleanup(stop)
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("server: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server not ready")
	}
	var token string
	if tok, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin.token")); err == nil {
		token = strings.TrimSpace(string(tok))
	}
	ts := &testServer{Server: s, url: "http://" + s.Addr(), token: token, dir: cfg.DataDir, stop: stop}
	ts.admin = client.New([]string{ts.url}, ts.token, client.Options{})
	ts.admin.Retry = 5 * time.Second
	waitFor(t, 10*time.Second, "leadership", func() bool { return s.IsLeader() })
	return ts
}

func (ts *testServer) client(token string) *client.Client {
	c := client.New([]string{ts.url}, token, client.Options{})
	c.Retry = 5 * time.Second
	return c
}

// tenant makes a tenant and returns a client with its token.
func (ts *testServer) tenant(t testing.TB, name string) *client.Client {
	t.Helper()
	ctx := context.Background()
	if _, err := ts.admin.CreateTenant(ctx, &api.Tenant{Metadata: api.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	tok, err := ts.admin.CreateToken(ctx, api.TokenRequest{Role: api.RoleTenant, Tenant: name})
	if err != nil {
		t.Fatal(err)
	}
	return ts.client(tok.Token)
}

func waitFor(t testing.TB, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func registration(name string, gpus int) *api.NodeRegistration {
	r := &api.NodeRegistration{Name: name, Address: "127.0.0.1", AgentVersion: "test"}
	for i := 0; i < gpus; i++ {
		r.Inventory.GPUs = append(r.Inventory.GPUs, api.GPU{Index: i, UUID: fmt.Sprintf("GPU-%s-%d", name, i), Model: "H100-80GB", MemoryMiB: 81559, Emulated: true})
	}
	r.Inventory.HCAs = []api.HCA{{Name: "mlx5_0", RateGbps: 400, State: "ACTIVE"}}
	return r
}

func testJob(name string, replicas, gpus int) *api.Job {
	return &api.Job{APIVersion: api.Version, Kind: api.KindJob, Metadata: api.ObjectMeta{Name: name},
		Spec: api.JobSpec{Replicas: replicas, GPUsPerReplica: gpus, Command: []string{"true"}}}
}

func waitPhase(t testing.TB, c *client.Client, id string, phase api.Phase, d time.Duration) *api.Job {
	t.Helper()
	var j *api.Job
	waitFor(t, d, "job "+id+" "+string(phase), func() bool {
		var err error
		j, err = c.Job(context.Background(), id)
		return err == nil && j.Status.Phase == phase
	})
	return j
}

var _ = store.Prefix
