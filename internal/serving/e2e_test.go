package serving_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"gpucloud/internal/serving"
	"gpucloud/internal/serving/autoscale"
	"gpucloud/internal/serving/local"
	"gpucloud/internal/serving/router"
	"gpucloud/internal/testbin"
)

// modelServer is the model stand-in, built by the first end-to-end test
// (-short runs none and builds nothing).
var modelServer string

func TestMain(m *testing.M) { testbin.Main(m) }

// harness runs one deployment of the model server: real processes on
// 127.0.0.1, the router in front, the controller stepping every 100ms.
type harness struct {
	t     *testing.T
	rt    *router.Router
	drv   *local.Driver
	ctrl  *serving.Controller
	front *httptest.Server
	url   string
}

func logger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

func newHarness(t *testing.T, spec serving.Spec) *harness {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end serving test: runs model server processes for several seconds")
	}
	modelServer = testbin.Build(t, testbin.ModelServer)
	spec.Template.Command[0] = modelServer
	log := logger()
	rt := router.New(router.Config{Logger: log})
	drv, err := local.New(local.Config{Dir: t.TempDir(), Grace: 5 * time.Second, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctrl, err := serving.NewController(spec, rt, drv, log)
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(rt)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ctrl.Run(ctx, 100*time.Millisecond); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		front.Close()
		drv.Close()
		rt.Close()
	})
	return &harness{t: t, rt: rt, drv: drv, ctrl: ctrl, front: front, url: front.URL + "/v1/deployments/" + spec.Name + "/v1/completions"}
}

func chatSpec(rev string) serving.Spec {
	return serving.Spec{
		Name: "chat",
		Template: serving.Template{
			Command: []string{modelServer},
			Env:     map[string]string{"MODEL_DELAY": "100ms", "MODEL_LOAD": "200ms", "MODEL_REVISION": rev},
		},
		Min: 1, Max: 8,
		Router: router.Options{ReadinessPath: "/health", CheckInterval: 200 * time.Millisecond, StartupInterval: 50 * time.Millisecond},
	}
}

// ready counts the replicas in the router's rotation.
func (h *harness) ready() (ready, total int) {
	st := h.ctrl.Status()
	for _, r := range st.Replicas {
		if r.State == "Ready" {
			ready++
		}
	}
	return ready, len(st.Replicas)
}

func (h *harness) waitFor(what string, timeout time.Duration, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out after %v waiting for %s; status: %+v", timeout, what, h.ctrl.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// loadGen keeps a number of clients in a closed loop of completions.
type loadGen struct {
	url    string
	client *http.Client
	target atomic.Int64
	ok     atomic.Int64
	failed atomic.Int64

	mu       sync.Mutex
	revs     map[string]int
	lastRevs map[string]int // since resetLast
	errs     []string
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startLoad(url string, workers int) *loadGen {
	g := &loadGen{
		url:    url,
		client: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}},
		revs:   map[string]int{}, lastRevs: map[string]int{}, stop: make(chan struct{}),
	}
	for i := range workers {
		g.wg.Add(1)
		go g.worker(int64(i))
	}
	return g
}

func (g *loadGen) worker(i int64) {
	defer g.wg.Done()
	for n := 0; ; n++ {
		select {
		case <-g.stop:
			return
		default:
		}
		if i >= g.target.Load() {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		rev, err := g.once(fmt.Sprintf("client %d request %d", i, n))
		g.mu.Lock()
		if err != nil {
			g.failed.Add(1)
			if len(g.errs) < 10 {
				g.errs = append(g.errs, err.Error())
			}
		} else {
			g.ok.Add(1)
			g.revs[rev]++
			g.lastRevs[rev]++
		}
		g.mu.Unlock()
	}
}

func (g *loadGen) once(prompt string) (string, error) {
	body, _ := json.Marshal(map[string]any{"prompt": prompt})
	resp, err := g.client.Post(g.url, "application/json", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	var a struct{ Text, Revision string }
	if err := json.Unmarshal(b, &a); err != nil || a.Text != "echo: "+prompt {
		return "", fmt.Errorf("bad answer %q to %q: %v", b, prompt, err)
	}
	return a.Revision, nil
}

func (g *loadGen) resetLast() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	last := g.lastRevs
	g.lastRevs = map[string]int{}
	return last
}

// finish stops the load and fails the test if any request failed.
func (g *loadGen) finish(t *testing.T) {
	t.Helper()
	close(g.stop)
	g.wg.Wait()
	t.Logf("requests: %d ok, %d failed, by revision %v", g.ok.Load(), g.failed.Load(), g.revs)
	if n := g.failed.Load(); n > 0 {
		t.Errorf("%d requests failed; first errors: %q", n, g.errs)
	}
	if g.ok.Load() == 0 {
		t.Error("no request succeeded")
	}
}

func metricValue(t *testing.T, rt *router.Router, name string, labels map[string]string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(rt)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				match := false
				for _, l := range m.GetLabel() {
					match = match || (l.GetName() == k && l.GetValue() == v)
				}
				if !match {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// Rising concurrency scales the deployment from 1 to at least 4 replicas;
// when the load falls it goes back to 1, draining each replica first, with
// no failed request.
func TestE2EAutoscaleUpAndDown(t *testing.T) {
	spec := chatSpec("v1")
	spec.Autoscale = &autoscale.Config{TargetInflight: 4, MetricWindow: time.Second, ScaleDownWindow: 3 * time.Second}
	h := newHarness(t, spec)
	h.waitFor("the first replica", 20*time.Second, func() bool { r, _ := h.ready(); return r == 1 })

	g := startLoad(h.url, 24)
	maxReady := 0
	for _, c := range []int64{2, 8, 16, 24} {
		g.target.Store(c)
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			r, _ := h.ready()
			maxReady = max(maxReady, r)
			time.Sleep(50 * time.Millisecond)
		}
		st := h.ctrl.Status()
		t.Logf("concurrency %d: desired %d (%s), ready %d", c, st.Desired, st.Scale.Reason, maxReady)
	}
	h.waitFor("at least 4 ready replicas", 30*time.Second, func() bool { r, _ := h.ready(); maxReady = max(maxReady, r); return r >= 4 })
	if d := h.ctrl.Status().Desired; d < 6 {
		t.Errorf("desired %d at 24 in flight with a target of 4, want 6", d)
	}

	// Load falls: back to min, one drained replica at a time.
	g.target.Store(2)
	h.waitFor("scale-down to 1 replica", 30*time.Second, func() bool { r, n := h.ready(); return r == 1 && n == 1 })
	time.Sleep(500 * time.Millisecond) // requests keep flowing to the survivor
	g.finish(t)
	t.Logf("max ready replicas: %d", maxReady)
	if got := metricValue(t, h.rt, "gpucloud_serving_requests_total", map[string]string{"code": "2xx"}); got != float64(g.ok.Load()) {
		t.Errorf("router counted %v answered requests, the clients %d", got, g.ok.Load())
	}
}

// A new template rolls out one replica at a time (never more than
// replicas+1 processes) with no failed request.
func TestE2ERollingUpdateNoFailures(t *testing.T) {
	spec := chatSpec("v1")
	spec.Min, spec.Max = 3, 3
	h := newHarness(t, spec)
	h.waitFor("3 ready replicas", 20*time.Second, func() bool { r, _ := h.ready(); return r == 3 })

	g := startLoad(h.url, 12)
	g.target.Store(12)
	time.Sleep(500 * time.Millisecond)

	// Watch the processes while the update runs.
	var maxAlive atomic.Int64
	watch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-watch:
				return
			case <-time.After(10 * time.Millisecond):
			}
			reps, _ := h.drv.Replicas(context.Background(), "chat")
			alive := 0
			for _, r := range reps {
				if r.Phase != serving.Exited {
					alive++
				}
			}
			if int64(alive) > maxAlive.Load() {
				maxAlive.Store(int64(alive))
			}
		}
	}()
	v2 := chatSpec("v2")
	v2.Min, v2.Max = 3, 3
	v2.Template.Env["MODEL_LOAD"] = "400ms" // the surged replica takes a while to be ready
	if err := h.ctrl.SetSpec(v2); err != nil {
		t.Fatal(err)
	}
	rev := v2.Template.Revision()
	h.waitFor("the rollout to complete", 40*time.Second, func() bool {
		st := h.ctrl.Status()
		return st.Revision == rev && st.Rollout.Complete
	})
	close(watch)
	<-watched
	g.resetLast()
	time.Sleep(500 * time.Millisecond)
	last := g.resetLast()
	g.finish(t)
	if last["v1"] != 0 || last["v2"] == 0 {
		t.Errorf("after the rollout, answers by revision: %v", last)
	}
	if g.revs["v1"] == 0 || g.revs["v2"] == 0 {
		t.Errorf("answers by revision %v: the load did not span the update", g.revs)
	}
	if n := maxAlive.Load(); n > 4 {
		t.Errorf("%d replica processes at once during the update, want at most 3+1", n)
	}
	t.Logf("most replica processes at once: %d", maxAlive.Load())
}

// Killing a replica's process mid-load fails no request: those it held
// are retried on the others, and a new replica takes its place.
func TestE2EKillReplicaMidLoad(t *testing.T) {
	spec := chatSpec("v1")
	spec.Min, spec.Max = 3, 3
	spec.Template.Env["MODEL_DELAY"] = "200ms"
	h := newHarness(t, spec)
	h.waitFor("3 ready replicas", 20*time.Second, func() bool { r, _ := h.ready(); return r == 3 })

	g := startLoad(h.url, 12)
	g.target.Store(12)
	time.Sleep(700 * time.Millisecond)
	st := h.ctrl.Status()
	var victim string
	for _, r := range st.Replicas {
		if r.InFlight > 0 {
			victim = r.ID
			break
		}
	}
	if victim == "" {
		t.Fatalf("no replica has requests in flight: %+v", st.Replicas)
	}
	if err := h.drv.Kill(victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed %s", victim)
	h.waitFor("the killed replica replaced", 20*time.Second, func() bool {
		st := h.ctrl.Status()
		ready := 0
		for _, r := range st.Replicas {
			if r.ID == victim {
				return false
			}
			if r.State == "Ready" {
				ready++
			}
		}
		return ready == 3
	})
	time.Sleep(500 * time.Millisecond)
	g.finish(t)
	if n := metricValue(t, h.rt, "gpucloud_serving_retries_total", nil); n == 0 {
		t.Error("no retries: the kill did not hit a request in flight, so the test proves nothing")
	} else {
		t.Logf("retries: %v", n)
	}
}

// A streamed answer (server-sent events, as LLM servers send tokens)
// reaches the client event by event, not at the end.
func TestE2EStreaming(t *testing.T) {
	spec := chatSpec("v1")
	spec.Template.Env["MODEL_DELAY"] = "400ms" // 4 events, 100ms apart
	h := newHarness(t, spec)
	h.waitFor("a ready replica", 20*time.Second, func() bool { r, _ := h.ready(); return r == 1 })
	resp, err := http.Post(h.url, "application/json", strings.NewReader(`{"prompt":"hi","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	var events []string
	var at []time.Time
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			events = append(events, data)
			at = append(at, time.Now())
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(events) != 5 || events[4] != "[DONE]" || !strings.Contains(events[0], `"tok0"`) {
		t.Fatalf("events %q", events)
	}
	// Spaced by the model, so they were not held back until the end.
	if spread := at[3].Sub(at[0]); spread < 200*time.Millisecond {
		t.Fatalf("events 0-3 arrived within %v: the stream was buffered", spread)
	}
}
