package router

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// connCounter counts the connections a backend accepted.
func connCounter(b *backend) *atomic.Int64 {
	var n atomic.Int64
	b.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			n.Add(1)
		}
	}
	return &n
}

func newStartedBackend(t *testing.T, id string, h http.HandlerFunc, setup func(*backend)) *backend {
	t.Helper()
	b := &backend{id: id}
	b.healthy.Store(true)
	b.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			return
		}
		b.hits.Add(1)
		h(w, r)
	}))
	if setup != nil {
		setup(b)
	}
	b.Start()
	t.Cleanup(b.Close)
	return b
}

func TestKeepsConnectionsAlive(t *testing.T) {
	var conns *atomic.Int64
	b := newStartedBackend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			w.Write([]byte("a"))
			w.(http.Flusher).Flush()
			w.Write([]byte("b"))
			return
		}
		io.WriteString(w, "ok")
	}, func(b *backend) { conns = connCounter(b) })
	o := fastOpts()
	o.CheckInterval = time.Hour
	_, srv := newRouter(t, o, b)
	before := conns.Load()
	for _, p := range []string{"/", "/chunked", "/", "/chunked", "/"} {
		resp, body := get(t, srv.URL+"/v1/deployments/m"+p)
		want := map[string]string{"/": "ok", "/chunked": "ab"}[p]
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("%s: %d %q", p, resp.StatusCode, body)
		}
	}
	req, _ := http.NewRequest("HEAD", srv.URL+"/v1/deployments/m/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HEAD: %v %v", resp, err)
	}
	resp.Body.Close()
	if _, body := get(t, srv.URL+"/v1/deployments/m/"); body != "ok" {
		t.Fatalf("after HEAD: %q", body)
	}
	if n := conns.Load() - before; n != 1 {
		t.Fatalf("%d connections for sequential requests, want 1", n)
	}
}

func TestConnectionCloseIsNotReused(t *testing.T) {
	var conns *atomic.Int64
	b := newStartedBackend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "ok")
	}, func(b *backend) { conns = connCounter(b) })
	o := fastOpts()
	o.CheckInterval = time.Hour
	o.Retry = RetryNone
	_, srv := newRouter(t, o, b)
	before := conns.Load()
	for range 3 {
		if resp, body := get(t, srv.URL+"/v1/deployments/m/"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	}
	if n := conns.Load() - before; n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}
}

// A replica that closes idle keep-alive connections (uvicorn does after
// 5s) must not fail requests, even those that may not be retried.
func TestStaleIdleConnectionsAreNotUsed(t *testing.T) {
	b := newStartedBackend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}, func(b *backend) { b.Config.IdleTimeout = 20 * time.Millisecond })
	o := fastOpts()
	o.CheckInterval = time.Hour
	o.Retry = RetryNone
	rt, srv := newRouter(t, o, b)
	for i := range 5 {
		resp, err := http.Post(srv.URL+"/v1/deployments/m/", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, body)
		}
		time.Sleep(60 * time.Millisecond) // the replica closes the connection
	}
	s, _ := rt.Snapshot("m")
	if s.Replicas[0].Failures != 0 {
		t.Fatalf("failures %d: %s", s.Replicas[0].Failures, s.Replicas[0].LastError)
	}
}

func TestInformationalResponsesAreSkipped(t *testing.T) {
	b := newStartedBackend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(201)
		fmt.Fprintf(w, "got %d", len(body))
	}, nil)
	_, srv := newRouter(t, fastOpts(), b)
	req, _ := http.NewRequest("POST", srv.URL+"/v1/deployments/m/", strings.NewReader("12345"))
	req.Header.Set("Expect", "100-continue")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || string(body) != "got 5" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

func TestClientCancelStopsTheReplicaRequest(t *testing.T) {
	canceled := make(chan struct{})
	b := newStartedBackend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // a long generation, until the router hangs up
		close(canceled)
	}, nil)
	rt, srv := newRouter(t, fastOpts(), b)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/deployments/m/", nil)
	go func() {
		waitFor(t, "request at the replica", func() bool { return b.hits.Load() == 1 })
		cancel()
	}()
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("canceled request succeeded")
	}
	select {
	case <-canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("the replica's request was not canceled")
	}
	waitFor(t, "no request in flight", func() bool { s, _ := rt.Snapshot("m"); return s.InFlight == 0 })
	s, _ := rt.Snapshot("m")
	if s.Replicas[0].Failures != 0 || !s.Replicas[0].Ready {
		t.Fatalf("a client's cancel counted against the replica: %+v", s.Replicas[0])
	}
	if v := counterValue(t, rt, "gpucloud_serving_requests_total", map[string]string{"code": "canceled"}); v != 1 {
		t.Fatalf("canceled = %v", v)
	}
}

func TestResponseHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	b := newStartedBackend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, nil)
	o := fastOpts()
	o.ResponseHeaderTimeout = 50 * time.Millisecond
	o.Attempts = 1
	_, srv := newRouter(t, o, b)
	resp, body := get(t, srv.URL+"/v1/deployments/m/")
	if resp.StatusCode != 502 || !strings.Contains(body, "timeout") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}

func TestLargeStreamedBodyArrivesIntact(t *testing.T) {
	b := newStartedBackend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	}, nil)
	o := fastOpts()
	o.MaxReplayBody = 1 << 10
	_, srv := newRouter(t, o, b)
	data := strings.Repeat("0123456789", 100_000) // 1 MB, over the replay limit
	want := fmt.Sprintf("%d %x", len(data), sha256.Sum256([]byte(data)))
	for _, chunked := range []bool{false, true} {
		var body io.Reader = strings.NewReader(data)
		if chunked {
			body = io.MultiReader(strings.NewReader(data[:10]), strings.NewReader(data[10:]))
		}
		resp, err := http.Post(srv.URL+"/v1/deployments/m/", "application/octet-stream", body)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != want {
			t.Fatalf("chunked=%v: %q, want %q", chunked, got, want)
		}
	}
}
