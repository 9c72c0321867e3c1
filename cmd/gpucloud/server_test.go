package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gpucloud/internal/testnet"
)

// `gpucloud server` serves the dashboard beside the API, as `up` does:
// / is the page, /v1/... and /healthz stay the API's.
func TestServerServesDashboard(t *testing.T) {
	if dashboardHandler == nil {
		t.Skip("built without the dashboard (up_web.go)")
	}
	isolate(t)
	dir := t.TempDir()
	port := testnet.FreePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		root := newRoot()
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		root.SetArgs([]string{"server", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", filepath.Join(dir, "data"),
			"--etcd-client-url", fmt.Sprintf("http://127.0.0.1:%d", testnet.FreePort(t)),
			"--etcd-peer-url", fmt.Sprintf("http://127.0.0.1:%d", testnet.FreePort(t)),
			"--unsafe-no-fsync", "--log-level", "error"})
		done <- root.ExecuteContext(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("server did not stop")
		}
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	get := func(path string) (int, string, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0, "", err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	waitUntil(t, 30*time.Second, "the server to answer /healthz", func() bool {
		select {
		case err := <-done:
			t.Fatalf("server: %v", err)
		default:
		}
		code, _, _ := get("/healthz")
		return code == 200
	})
	if code, ctype, body := get("/"); code != 200 || !strings.HasPrefix(ctype, "text/html") || !strings.Contains(body, "<title>gpucloud</title>") {
		t.Fatalf("GET /: %d %s %.200q", code, ctype, body)
	}
	if code, ctype, body := get("/v1/no-such-thing"); code != 404 || !strings.HasPrefix(ctype, "application/json") {
		t.Fatalf("GET /v1/no-such-thing: %d %s %.200q", code, ctype, body)
	}
	if code, _, body := get("/v1/openapi.json"); code != 200 || !strings.Contains(body, `"/v1/jobs"`) {
		t.Fatalf("GET /v1/openapi.json: %d %.200q", code, body)
	}
}
