package launch

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gpucloud/internal/api"
)

// BenchmarkLaunchLatency measures the time from Sync (an assignment
// arriving at the launcher) to the moment each rank's own process runs:
// the rank is /bin/date +%s%N, which prints the wall clock at its start.
// It reports the mean, median and 99th percentile of the last rank of the
// gang to start.
//
// By default the shim is this test binary; GPUCLOUD_BENCH_SHIM="/path/to/gpucloud agent shim"
// measures the real binary.
//
// "prestarted" hands the ranks to idle shims, as the agent does (one per
// GPU, refilled between assignments); "cold" starts a shim per rank.
func BenchmarkLaunchLatency(b *testing.B) {
	for _, ranks := range []int{1, 8} {
		for _, pre := range []bool{true, false} {
			name := strconv.Itoa(ranks) + "ranks/cold"
			if pre {
				name = strconv.Itoa(ranks) + "ranks/prestarted"
			}
			b.Run(name, func(b *testing.B) { benchLaunch(b, ranks, pre) })
		}
	}
}

func benchLaunch(b *testing.B, ranks int, prestart bool) {
	rec := &recorder{}
	shim := []string{os.Args[0]}
	if s := os.Getenv("GPUCLOUD_BENCH_SHIM"); s != "" {
		shim = strings.Fields(s)
	}
	cfg := Config{DataDir: b.TempDir(), Shim: shim, OnEvent: rec.add, BaseEnv: []string{"PATH=/usr/bin:/bin"}}
	if prestart {
		cfg.Prestart = ranks
	}
	l, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	if prestart { // the pool fills once the node has run a gang
		w := Spec{Assignment: api.Assignment{Job: "warm-up", WorldSize: 1, Nodes: 1, Command: []string{"true"},
			Processes: []api.Process{{Rank: 0}}}}
		l.Sync([]Spec{w})
		l.Wait(w.Key(), time.Minute)
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		s := Spec{Assignment: api.Assignment{Job: "bench", Generation: i, WorldSize: ranks, Nodes: 1,
			Command: []string{"/bin/date", "+%s%N"}, MasterAddr: "127.0.0.1", MasterPort: 29500}}
		for r := range ranks {
			s.Processes = append(s.Processes, api.Process{Rank: r, LocalRank: r, GPUs: []int{r}})
		}
		l.pool.waitFull() // assignments come seconds apart, not back to back
		t0 := time.Now()
		if err := l.Sync([]Spec{s}); err != nil {
			b.Fatal(err)
		}
		if !l.Wait(s.Key(), time.Minute) {
			b.Fatal("gang did not end")
		}
		var last time.Duration
		for r := range ranks {
			out, err := os.ReadFile(l.LogPath(s.Key(), r))
			ns, perr := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
			if err != nil || perr != nil {
				b.Fatalf("rank %d printed %q: %v %v", r, out, err, perr)
			}
			last = max(last, time.Unix(0, ns).Sub(t0))
		}
		lat = append(lat, last)
	}
	b.StopTimer()
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	b.ReportMetric(ms(sum/time.Duration(len(lat))), "ms-mean")
	b.ReportMetric(ms(lat[len(lat)/2]), "ms-p50")
	b.ReportMetric(ms(lat[len(lat)*99/100]), "ms-p99")
}
