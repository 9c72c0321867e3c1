package router

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// loadResult is one closed-loop load run.
type loadResult struct {
	requests int
	errors   int
	elapsed  time.Duration
	cpu      time.Duration   // CPU time of this process (user+system) during the run
	lat      []time.Duration // sorted
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (r loadResult) rps() float64 { return float64(r.requests) / r.elapsed.Seconds() }

func (r loadResult) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(len(r.lat)-1, int(float64(len(r.lat))*p))]
}

// load sends n GETs to url from conc keep-alive clients, each waiting for
// its answer before sending the next (closed loop).
func load(client *http.Client, url string, conc, n int) loadResult {
	var mu sync.Mutex
	res := loadResult{lat: make([]time.Duration, 0, n)}
	per := n / conc
	var wg sync.WaitGroup
	start, cpu0 := time.Now(), cpuTime()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, per)
			errs := 0
			for range per {
				t := time.Now()
				resp, err := client.Get(url)
				if err != nil {
					errs++
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					errs++
					continue
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			res.lat = append(res.lat, lat...)
			res.errors += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed, res.cpu = time.Since(start), cpuTime()-cpu0
	res.requests = len(res.lat)
	slices.Sort(res.lat)
	return res
}

// loadRate sends n GETs to url at a fixed rate (open loop: arrivals do not
// wait for answers), from up to workers keep-alive clients. Latency is
// measured from each request's send.
func loadRate(client *http.Client, url string, rate float64, workers, n int) loadResult {
	var mu sync.Mutex
	res := loadResult{lat: make([]time.Duration, 0, n)}
	tick := make(chan struct{}, workers)
	var wg sync.WaitGroup
	start, cpu0 := time.Now(), cpuTime()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			errs := 0
			for range tick {
				t := time.Now()
				resp, err := client.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != 200 {
					errs++
					continue
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			res.lat = append(res.lat, lat...)
			res.errors += errs
			mu.Unlock()
		}()
	}
	interval := time.Duration(float64(time.Second) / rate)
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		tick <- struct{}{}
	}
	close(tick)
	wg.Wait()
	res.elapsed, res.cpu = time.Since(start), cpuTime()-cpu0
	res.requests = len(res.lat)
	slices.Sort(res.lat)
	return res
}

// BenchmarkOverhead measures what the router adds: the same closed-loop
// load goes to a replica directly and through the router, alternating in
// slices so both see the same machine load, and the difference is
// reported. The replica answers 64 bytes at once, so the figures are the
// router's cost, not a model's. Everything (load generator, router,
// replica) shares this machine's cores, as on a small serving node.
//
//	go test -run '^$' -bench Overhead -benchtime 20000x ./internal/serving/router/
//
// closed/c=N: N clients in a closed loop (throughput, and latency with the
// CPUs saturated); rate=R: R requests/s from 64 clients (latency below
// saturation).
func BenchmarkOverhead(b *testing.B) {
	payload := []byte(`{"id":"cmpl-1","choices":[{"text":"hello world, hello gpus!!"}]}`) // 64 bytes
	replica := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(payload)
	}))
	defer replica.Close()
	rt := New(Config{Logger: quiet})
	defer rt.Close()
	rt.SetDeployment("m", Options{ReadinessPath: "/health", StartupInterval: 5 * time.Millisecond})
	rt.SetEndpoints("m", []Endpoint{{ID: "r1", Addr: replica.Listener.Addr().String()}})
	for s, _ := rt.Snapshot("m"); !s.Replicas[0].Ready; s, _ = rt.Snapshot("m") {
		time.Sleep(time.Millisecond)
	}
	front := httptest.NewServer(rt)
	defer front.Close()

	direct, routed := replica.URL+"/v1/completions", front.URL+"/v1/deployments/m/v1/completions"
	report := func(b *testing.B, d, r loadResult) {
		if d.errors+r.errors > 0 {
			b.Fatalf("%d direct and %d routed requests failed", d.errors, r.errors)
		}
		b.ReportMetric(d.rps(), "direct-req/s")
		b.ReportMetric(r.rps(), "routed-req/s")
		b.ReportMetric(us(d.pct(0.5)), "direct-p50-µs")
		b.ReportMetric(us(r.pct(0.5)), "routed-p50-µs")
		b.ReportMetric(us(d.pct(0.99)), "direct-p99-µs")
		b.ReportMetric(us(r.pct(0.99)), "routed-p99-µs")
		b.ReportMetric(us(r.pct(0.5)-d.pct(0.5)), "added-p50-µs")
		b.ReportMetric(us(r.pct(0.99)-d.pct(0.99)), "added-p99-µs")
		// CPU per request, less sensitive than wall time to what else
		// runs on the machine: the difference is the router's own cost,
		// and 2 s / that is what two cores of router alone could carry.
		dc := us(d.cpu) / float64(d.requests)
		rc := us(r.cpu) / float64(r.requests)
		b.ReportMetric(rc-dc, "router-cpu-µs/req")
		b.ReportMetric(2e6/(rc-dc), "router-req/s-per-2-cores")
	}
	const rounds = 10 // direct and routed alternate, so both see the same machine

	// Closed loop: each client sends its next request when the last one is
	// answered; the rate is the most the machine gives.
	for _, conc := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("closed/c=%d", conc), func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
			defer client.CloseIdleConnections()
			load(client, direct, conc, conc*20) // warm both paths' connections
			load(client, routed, conc, conc*20)
			b.ResetTimer()
			var d, r loadResult
			n := max(b.N/rounds, conc)
			for range rounds {
				d = merge(d, load(client, direct, conc, n))
				r = merge(r, load(client, routed, conc, n))
			}
			b.StopTimer()
			report(b, d, r)
		})
	}
	// Open loop at fixed rates below saturation: the latency a request
	// sees from the router when the machine is not overloaded.
	for _, rate := range []float64{2000, 5000} {
		b.Run(fmt.Sprintf("rate=%.0f", rate), func(b *testing.B) {
			const workers = 64
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
			defer client.CloseIdleConnections()
			load(client, direct, workers, workers*10)
			load(client, routed, workers, workers*10)
			b.ResetTimer()
			var d, r loadResult
			n := max(b.N/rounds, 100)
			for range rounds {
				d = merge(d, loadRate(client, direct, rate, workers, n))
				r = merge(r, loadRate(client, routed, rate, workers, n))
			}
			b.StopTimer()
			report(b, d, r)
		})
	}
}

func merge(a, b loadResult) loadResult {
	a.requests += b.requests
	a.errors += b.errors
	a.elapsed += b.elapsed
	a.cpu += b.cpu
	a.lat = append(a.lat, b.lat...)
	slices.Sort(a.lat)
	return a
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }
