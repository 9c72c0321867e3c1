package router

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// backend is a replica for tests: an HTTP server with a health endpoint
// and a handler the test chooses.
type backend struct {
	*httptest.Server
	id      string
	healthy atomic.Bool
	hits    atomic.Int64
}

func newBackend(t *testing.T, id string, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{id: id}
	b.healthy.Store(true)
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			if !b.healthy.Load() {
				http.Error(w, "loading", http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, "ok")
			return
		}
		b.hits.Add(1)
		w.Header().Set("X-Backend", id)
		h(w, r)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) addr() string { return strings.TrimPrefix(b.URL, "http://") }

func (b *backend) ep() Endpoint { return Endpoint{ID: b.id, Addr: b.addr()} }

func fastOpts() Options {
	return Options{ReadinessPath: "/health", CheckInterval: 50 * time.Millisecond, StartupInterval: 10 * time.Millisecond, QueueTimeout: 5 * time.Second}
}

// newRouter serves a router with deployment "m" over the given backends
// and waits until they are ready.
func newRouter(t *testing.T, opts Options, bs ...*backend) (*Router, *httptest.Server) {
	t.Helper()
	rt := New(Config{Logger: quiet})
	t.Cleanup(rt.Close)
	if err := rt.SetDeployment("m", opts); err != nil {
		t.Fatal(err)
	}
	var eps []Endpoint
	for _, b := range bs {
		eps = append(eps, b.ep())
	}
	if err := rt.SetEndpoints("m", eps); err != nil {
		t.Fatal(err)
	}
	waitReady(t, rt, "m", len(bs))
	srv := httptest.NewServer(rt)
	t.Cleanup(srv.Close)
	return rt, srv
}

func waitReady(t *testing.T, rt *Router, name string, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d ready replicas of %s", n, name), func() bool {
		s, _ := rt.Snapshot(name)
		ready := 0
		for _, r := range s.Replicas {
			if r.Ready {
				ready++
			}
		}
		return ready == n
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestProxiesPathQueryAndHeaders(t *testing.T) {
	var got *http.Request
	b := newBackend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(context.Background())
		w.Header().Set("Keep-Alive", "timeout=5") // hop-by-hop: must not reach the client
		w.Header().Set("X-Model", "tiny")
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "hello "+r.URL.RequestURI())
	})
	_, srv := newRouter(t, fastOpts(), b)

	req, _ := http.NewRequest("GET", srv.URL+"/v1/deployments/m/v1/models/a%2Fb?x=1&y=2", nil)
	req.Header.Set("Authorization", "Bearer gpucloud-secret")
	req.Header.Set("X-Forwarded-For", "10.0.0.1")
	req.Header.Set("X-Custom", "kept")
	req.Header.Set("Connection", "X-Drop")
	req.Header.Set("X-Drop", "hop")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot || string(body) != "hello /v1/models/a%2Fb?x=1&y=2" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Model") != "tiny" || resp.Header.Get("Keep-Alive") != "" || resp.Header.Get("X-Gpucloud-Replica") != "r1" {
		t.Errorf("response headers %v", resp.Header)
	}
	if got.Header.Get("Authorization") != "" {
		t.Error("the caller's token reached the replica")
	}
	if got.Header.Get("X-Custom") != "kept" || got.Header.Get("X-Drop") != "" {
		t.Errorf("request headers %v", got.Header)
	}
	if xff := got.Header.Get("X-Forwarded-For"); xff != "10.0.0.1, 127.0.0.1" {
		t.Errorf("X-Forwarded-For %q", xff)
	}
	if got.Header.Get("X-Forwarded-Proto") != "http" || got.Header.Get("X-Forwarded-Host") == "" {
		t.Errorf("X-Forwarded-* %v", got.Header)
	}
	if ua := got.Header.Get("User-Agent"); ua != "Go-http-client/1.1" {
		t.Errorf("User-Agent %q, want the client's", ua)
	}

	// The bare deployment path is the replica's root.
	if _, body := get(t, srv.URL+"/v1/deployments/m"); body != "hello /" {
		t.Errorf("bare path reached %q", body)
	}
	resp, body2 := get(t, srv.URL+"/v1/deployments/nope/x")
	if resp.StatusCode != 404 || !strings.Contains(body2, `no deployment \"nope\"`) {
		t.Errorf("unknown deployment: %d %s", resp.StatusCode, body2)
	}
}

func TestForwardAuthorizationWhenAsked(t *testing.T) {
	var auth atomic.Value
	b := newBackend(t, "r1", func(w http.ResponseWriter, r *http.Request) { auth.Store(r.Header.Get("Authorization")) })
	o := fastOpts()
	o.ForwardAuthorization = true
	_, srv := newRouter(t, o, b)
	req, _ := http.NewRequest("GET", srv.URL+"/v1/deployments/m/", nil)
	req.Header.Set("Authorization", "Bearer model-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if auth.Load() != "Bearer model-key" {
		t.Fatalf("Authorization %q", auth.Load())
	}
}

// hold is a handler that answers when released, counting who waits.
type hold struct {
	release chan struct{}
	waiting atomic.Int64
}

func newHold() *hold { return &hold{release: make(chan struct{})} }

func (h *hold) handler(w http.ResponseWriter, r *http.Request) {
	h.waiting.Add(1)
	<-h.release
	io.WriteString(w, "done")
}

func TestLeastInflightFirst(t *testing.T) {
	ha, hb := newHold(), newHold()
	a := newBackend(t, "a", ha.handler)
	b := newBackend(t, "b", hb.handler)
	_, srv := newRouter(t, fastOpts(), a, b)
	var wg sync.WaitGroup
	send := func() {
		wg.Add(1)
		go func() { defer wg.Done(); get(t, srv.URL+"/v1/deployments/m/") }()
	}
	for range 6 {
		send()
	}
	waitFor(t, "6 requests held", func() bool { return ha.waiting.Load()+hb.waiting.Load() == 6 })
	if ha.waiting.Load() != 3 {
		t.Fatalf("split %d/%d, want 3/3", ha.waiting.Load(), hb.waiting.Load())
	}
	// Free a's requests: the next three all go to a, the least busy.
	close(ha.release)
	waitFor(t, "a idle", func() bool { return a.hits.Load() == 3 })
	for range 3 {
		send()
	}
	waitFor(t, "3 more on a", func() bool { return a.hits.Load() == 6 })
	if hb.waiting.Load() != 3 {
		t.Fatalf("b got %d, want 3", hb.waiting.Load())
	}
	close(hb.release)
	wg.Wait()
}

// dropper hijacks the connection and closes it without an answer, the
// way a killed replica looks to the router.
func dropper(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	c, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		c.Close()
	}
}

func TestRetriesOnAnotherReplica(t *testing.T) {
	var bodies sync.Map
	bad := newBackend(t, "bad", dropper)
	good := newBackend(t, "good", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies.Store(string(b), true)
		io.WriteString(w, "ok:"+string(b))
	})
	// Keep the bad replica passing health checks, so only retries save
	// the requests that reach it.
	rt, srv := newRouter(t, fastOpts(), bad, good)
	for i := range 10 {
		body := fmt.Sprintf(`{"prompt":"p%d"}`, i)
		resp, err := http.Post(srv.URL+"/v1/deployments/m/v1/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(got) != "ok:"+body {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, got)
		}
	}
	if bad.hits.Load() == 0 {
		t.Fatal("the failing replica was never tried: the test proves nothing")
	}
	s, _ := rt.Snapshot("m")
	for _, r := range s.Replicas {
		if r.ID == "bad" && (r.Failures == 0 || r.LastError == "") {
			t.Errorf("bad replica status %+v", r)
		}
	}
	if v := counterValue(t, rt, "gpucloud_serving_retries_total", nil); v != float64(bad.hits.Load()) {
		t.Errorf("retries metric %v, want %d", v, bad.hits.Load())
	}
}

func TestRetryPolicy(t *testing.T) {
	tests := []struct {
		policy RetryPolicy
		method string
		header string
		want   int
	}{
		{RetryAll, "POST", "", 200},
		{RetrySafe, "POST", "", 502},
		{RetrySafe, "POST", "Idempotency-Key", 200},
		{RetrySafe, "PUT", "", 200},
		{RetrySafe, "GET", "", 200},
		{RetryNone, "GET", "", 502},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.policy, tc.method, tc.header), func(t *testing.T) {
			bad := newBackend(t, "a-bad", dropper) // sorts first: tried first
			good := newBackend(t, "b-good", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
			o := fastOpts()
			o.Retry = tc.policy
			_, srv := newRouter(t, o, bad, good)
			req, _ := http.NewRequest(tc.method, srv.URL+"/v1/deployments/m/x", strings.NewReader("body"))
			if tc.header != "" {
				req.Header.Set(tc.header, "k1")
			}
			// Round robin breaks ties, so send until bad was tried once.
			for bad.hits.Load() == 0 {
				resp, err := http.DefaultClient.Do(req.Clone(context.Background()))
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if bad.hits.Load() > 0 && resp.StatusCode != tc.want {
					t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
				}
				req.Body = io.NopCloser(strings.NewReader("body"))
			}
		})
	}
}

func TestRefusedConnectionsAlwaysRetried(t *testing.T) {
	gone := newBackend(t, "a-gone", func(w http.ResponseWriter, r *http.Request) {})
	good := newBackend(t, "b-good", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	o := fastOpts()
	o.Retry = RetryNone
	o.CheckInterval = time.Hour // the router must not learn of the death from checks
	_, srv := newRouter(t, o, gone, good)
	gone.Close()
	for i := range 4 {
		resp, err := http.Post(srv.URL+"/v1/deployments/m/", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
}

func TestLargeBodiesAreNotReplayed(t *testing.T) {
	bad := newBackend(t, "a-bad", dropper)
	good := newBackend(t, "b-good", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	})
	o := fastOpts()
	o.MaxReplayBody = 1000
	_, srv := newRouter(t, o, bad, good)
	big := bytes.Repeat([]byte("x"), 5000)
	for bad.hits.Load() == 0 {
		resp, err := http.Post(srv.URL+"/v1/deployments/m/", "text/plain", bytes.NewReader(big))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if bad.hits.Load() > 0 && resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("large body through a failing replica: %d %s", resp.StatusCode, b)
		}
		if resp.StatusCode == 200 && string(b) != "5000" {
			t.Fatalf("good replica got %s bytes", b)
		}
	}
	// A chunked body of unknown length under the limit is replayed.
	bad.hits.Store(0)
	for bad.hits.Load() == 0 {
		resp, err := http.Post(srv.URL+"/v1/deployments/m/", "text/plain", io.MultiReader(strings.NewReader("abc"), strings.NewReader("def")))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "6" {
			t.Fatalf("chunked body: %d %s", resp.StatusCode, b)
		}
	}
}

func TestStreamsEventsAsTheyArrive(t *testing.T) {
	next := make(chan struct{})
	b := newBackend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Trailer", "X-Tokens")
		for i := range 3 {
			fmt.Fprintf(w, "data: token%d\n\n", i)
			w.(http.Flusher).Flush()
			<-next
		}
		w.Header().Set("X-Tokens", "3")
	})
	_, srv := newRouter(t, fastOpts(), b)
	resp, err := http.Get(srv.URL + "/v1/deployments/m/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		// The event must arrive while the replica is still blocked.
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("data: token%d\n", i) {
			t.Fatalf("event %d: %q %v", i, line, err)
		}
		br.ReadString('\n')
		next <- struct{}{}
	}
	if rest, _ := io.ReadAll(br); len(rest) != 0 {
		t.Fatalf("trailing %q", rest)
	}
	if resp.Trailer.Get("X-Tokens") != "3" {
		t.Errorf("trailer %v", resp.Trailer)
	}
}

func TestMidResponseFailureAbortsClient(t *testing.T) {
	b := newBackend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		c, _, _ := http.NewResponseController(w).Hijack()
		c.Close()
	})
	_, srv := newRouter(t, fastOpts(), b)
	// The client sees an error: at the headers (they were still
	// buffered) or in the body, never a short body that looks whole.
	resp, err := http.Get(srv.URL + "/v1/deployments/m/")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("a truncated response read as complete")
	}
}

func TestDrainingReplicaFinishesButGetsNothingNew(t *testing.T) {
	h := newHold()
	a := newBackend(t, "a", h.handler)
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") })
	rt, srv := newRouter(t, fastOpts(), a, b)
	// Put one request on a (b idle means round robin; send until a holds one).
	done := make(chan string, 1)
	go func() {
		for h.waiting.Load() == 0 {
			_, body := get(t, srv.URL+"/v1/deployments/m/")
			if body == "done" {
				done <- body
				return
			}
		}
	}()
	waitFor(t, "a request held on a", func() bool { return h.waiting.Load() == 1 })
	if !rt.Drain("m", "a") {
		t.Fatal("Drain found no replica a")
	}
	s, _ := rt.Snapshot("m")
	if s.Replicas[0].ID != "a" || !s.Replicas[0].Draining || s.Replicas[0].InFlight != 1 {
		t.Fatalf("snapshot %+v", s.Replicas)
	}
	for range 20 {
		if _, body := get(t, srv.URL+"/v1/deployments/m/"); body != "b" {
			t.Fatalf("a draining replica got a new request")
		}
	}
	close(h.release)
	if got := <-done; got != "done" {
		t.Fatalf("held request got %q", got)
	}
	waitFor(t, "a drained", func() bool { s, _ := rt.Snapshot("m"); return s.Replicas[0].InFlight == 0 })
	// Removing it keeps b.
	rt.SetEndpoints("m", []Endpoint{b.ep()})
	s, _ = rt.Snapshot("m")
	if len(s.Replicas) != 1 || s.Replicas[0].ID != "b" {
		t.Fatalf("after removal %+v", s.Replicas)
	}
}

func TestWaitsForReadinessThenServes(t *testing.T) {
	b := newBackend(t, "r1", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	b.healthy.Store(false)
	rt := New(Config{Logger: quiet})
	defer rt.Close()
	rt.SetDeployment("m", fastOpts())
	rt.SetEndpoints("m", []Endpoint{b.ep()})
	srv := httptest.NewServer(rt)
	defer srv.Close()
	res := make(chan string, 1)
	go func() { _, body := get(t, srv.URL+"/v1/deployments/m/"); res <- body }()
	waitFor(t, "a queued request", func() bool { s, _ := rt.Snapshot("m"); return s.Queued == 1 })
	if b.hits.Load() != 0 {
		t.Fatal("a replica that is not ready got a request")
	}
	b.healthy.Store(true)
	if got := <-res; got != "ok" {
		t.Fatalf("got %q", got)
	}
	s, _ := rt.Snapshot("m")
	if s.QueueWaitSeconds <= 0 || s.Queued != 0 || s.Dispatched != 1 {
		t.Fatalf("snapshot %+v", s)
	}
}

func TestQueueLimits(t *testing.T) {
	h := newHold()
	b := newBackend(t, "r1", h.handler)
	o := fastOpts()
	o.MaxInflightPerReplica = 1
	o.MaxQueue = 1
	o.QueueTimeout = 300 * time.Millisecond
	rt, srv := newRouter(t, o, b)
	first := make(chan int, 1)
	go func() { resp, _ := get(t, srv.URL+"/v1/deployments/m/"); first <- resp.StatusCode }()
	waitFor(t, "one in flight", func() bool { return h.waiting.Load() == 1 })
	second := make(chan int, 1)
	go func() { resp, _ := get(t, srv.URL+"/v1/deployments/m/"); second <- resp.StatusCode }()
	waitFor(t, "one queued", func() bool { s, _ := rt.Snapshot("m"); return s.Queued == 1 })
	// The queue is full: the third is refused at once.
	resp, body := get(t, srv.URL+"/v1/deployments/m/")
	if resp.StatusCode != 503 || !strings.Contains(body, "overloaded") || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third: %d %s", resp.StatusCode, body)
	}
	// The queued one times out.
	if code := <-second; code != 503 {
		t.Fatalf("queued request: %d, want 503 after the queue timeout", code)
	}
	close(h.release)
	if code := <-first; code != 200 {
		t.Fatalf("first: %d", code)
	}
	// With the replica free, a queued request is handed the slot.
	o.QueueTimeout = 5 * time.Second
	rt.SetDeployment("m", o)
	if resp, _ := get(t, srv.URL+"/v1/deployments/m/"); resp.StatusCode != 200 {
		t.Fatalf("after release: %d", resp.StatusCode)
	}
}

func TestEjectedReplicaReturnsAfterPassingCheck(t *testing.T) {
	var fail atomic.Bool
	b := newBackend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			dropper(w, r)
			return
		}
		io.WriteString(w, "ok")
	})
	o := fastOpts()
	o.Attempts = 1
	rt, srv := newRouter(t, o, b)
	fail.Store(true)
	resp, _ := get(t, srv.URL+"/v1/deployments/m/")
	if resp.StatusCode != 502 {
		t.Fatalf("got %d, want 502 with one attempt", resp.StatusCode)
	}
	fail.Store(false)
	// Health checks still pass: the replica is back at once.
	waitReady(t, rt, "m", 1)
	if resp, body := get(t, srv.URL+"/v1/deployments/m/"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}

func TestHealthCheckFailuresTakeReplicaOut(t *testing.T) {
	a := newBackend(t, "a", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") })
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") })
	rt, srv := newRouter(t, fastOpts(), a, b)
	a.healthy.Store(false)
	waitReady(t, rt, "m", 1)
	for range 10 {
		if _, body := get(t, srv.URL+"/v1/deployments/m/"); body != "b" {
			t.Fatal("an unready replica got a request")
		}
	}
	a.healthy.Store(true)
	waitReady(t, rt, "m", 2)
}

func TestConcurrencyIntegral(t *testing.T) {
	h := newHold()
	a := newBackend(t, "a", h.handler)
	rt, srv := newRouter(t, fastOpts(), a)
	s0, _ := rt.Snapshot("m")
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); get(t, srv.URL+"/v1/deployments/m/") }()
	}
	waitFor(t, "two held", func() bool { return h.waiting.Load() == 2 })
	s1, _ := rt.Snapshot("m")
	time.Sleep(200 * time.Millisecond)
	s2, _ := rt.Snapshot("m")
	close(h.release)
	wg.Wait()
	// Between s1 and s2 exactly two requests were in flight.
	got := (s2.ConcurrencySeconds - s1.ConcurrencySeconds) / (s2.At - s1.At).Seconds()
	if got < 1.999 || got > 2.001 {
		t.Fatalf("mean concurrency %v, want 2", got)
	}
	if s1.ConcurrencySeconds < s0.ConcurrencySeconds {
		t.Fatal("integral went backwards")
	}
}

func TestUpgradeIsProxied(t *testing.T) {
	b := newBackend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want upgrade", 400)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo " + line)
		brw.Flush()
	})
	_, srv := newRouter(t, fastOpts(), b)
	c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /v1/deployments/m/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	fmt.Fprintf(c, "hi\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "echo hi\n" {
		t.Fatalf("echo: %q %v", line, err)
	}
}

func TestOptionsValidate(t *testing.T) {
	rt := New(Config{Logger: quiet})
	defer rt.Close()
	for _, o := range []Options{{Retry: "sometimes"}, {ReadinessPath: "health"}, {MaxQueue: -1}} {
		if err := rt.SetDeployment("m", o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if err := rt.SetEndpoints("absent", nil); err == nil {
		t.Error("endpoints of an absent deployment accepted")
	}
}

func TestMetrics(t *testing.T) {
	b := newBackend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "ok")
	})
	rt, srv := newRouter(t, fastOpts(), b)
	for range 3 {
		get(t, srv.URL+"/v1/deployments/m/")
	}
	get(t, srv.URL+"/v1/deployments/m/missing")
	if v := counterValue(t, rt, "gpucloud_serving_requests_total", map[string]string{"code": "2xx"}); v != 3 {
		t.Errorf("2xx = %v", v)
	}
	if v := counterValue(t, rt, "gpucloud_serving_requests_total", map[string]string{"code": "4xx"}); v != 1 {
		t.Errorf("4xx = %v", v)
	}
	if v := counterValue(t, rt, "gpucloud_serving_replicas", map[string]string{"state": "ready"}); v != 1 {
		t.Errorf("ready replicas = %v", v)
	}
	mf := gather(t, rt, "gpucloud_serving_request_duration_seconds")
	if n := mf[0].GetHistogram().GetSampleCount(); n != 4 {
		t.Errorf("latency samples %d", n)
	}
	rt.RemoveDeployment("m")
	if len(gather(t, rt, "gpucloud_serving_requests_total")) != 0 {
		t.Error("metrics of a removed deployment remain")
	}
	if resp, _ := get(t, srv.URL+"/v1/deployments/m/"); resp.StatusCode != 404 {
		t.Errorf("removed deployment: %d", resp.StatusCode)
	}
}

func gather(t *testing.T, rt *Router, name string) []*dto.Metric {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(rt); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	return nil
}

// counterValue sums the samples of a counter or gauge whose labels include
// want.
func counterValue(t *testing.T, rt *Router, name string, want map[string]string) float64 {
	t.Helper()
	var sum float64
next:
	for _, m := range gather(t, rt, name) {
		for k, v := range want {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return sum
}

// quiet drops the router's logs in tests.
var quiet = slog.New(slog.DiscardHandler)

// A replica that passes its checks but fails every request is kept out
// longer each time instead of being re-admitted at once.
func TestOutlierEjectionBacksOff(t *testing.T) {
	bad := newBackend(t, "a-bad", dropper)
	good := newBackend(t, "b-good", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	_, srv := newRouter(t, fastOpts(), bad, good)
	start := time.Now()
	for i := range 100 {
		if resp, body := get(t, srv.URL+"/v1/deployments/m/"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	// Out 250ms after the second failure, 500ms after the third...: a
	// handful of tries in the time 100 requests take.
	elapsed := time.Since(start)
	allowed := int64(2 + 2*elapsed/ejectBase)
	if n := bad.hits.Load(); n < 1 || n > min(allowed, 10) {
		t.Fatalf("the failing replica got %d of 100 requests in %v (allowed %d)", n, elapsed, min(allowed, 10))
	}
}
