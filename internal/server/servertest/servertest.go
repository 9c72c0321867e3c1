// Package servertest runs a real control plane for the tests of other
// packages: the server on a real single-member etcd (fsync off) on loopback
// ports. (The server's own tests have their own, richer helper: they may
// not import this package.)
package servertest

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

	"gpucloud/internal/server"
	"gpucloud/internal/testnet"
)

// Start runs a server with its data in dir and mod applied to its
// configuration (nil: none), waits until it leads, and returns it with its
// admin token. The test's cleanup stops it.
func Start(t testing.TB, dir string, mod func(*server.Config)) (*server.Server, string) {
	t.Helper()
	cfg := server.Config{
		Listen: "127.0.0.1:0", DataDir: dir, NoFsync: true,
		EtcdClientURL: fmt.Sprintf("http://127.0.0.1:%d", testnet.FreePort(t)),
		EtcdPeerURL:   fmt.Sprintf("http://127.0.0.1:%d", testnet.FreePort(t)),
		CycleInterval: 20 * time.Millisecond,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("server did not stop")
		}
	})
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("server: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server not ready")
	}
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !s.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("no leader after 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s, strings.TrimSpace(string(tok))
}
