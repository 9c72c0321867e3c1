package sim

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"gpucloud/internal/topology"
)

// TestEventOrder pushes events in a scrambled order and checks they come
// out by time, then kind (finishes before repairs before failures before
// arrivals before ticks), then insertion order.
func TestEventOrder(t *testing.T) {
	type key struct {
		At   time.Duration
		Kind eventKind
		Node int32
	}
	in := []key{
		{5, evTick, 0}, {5, evArrival, 1}, {1, evArrival, 2}, {5, evFinish, 3},
		{5, evArrival, 4}, {3, evFailure, 5}, {5, evRepair, 6}, {3, evFinish, 7},
		{5, evFailure, 8}, {0, evTick, 9}, {5, evArrival, 10}, {5, evFinish, 11},
	}
	want := []key{
		{0, evTick, 9}, {1, evArrival, 2}, {3, evFinish, 7}, {3, evFailure, 5},
		{5, evFinish, 3}, {5, evFinish, 11}, {5, evRepair, 6}, {5, evFailure, 8},
		{5, evArrival, 1}, {5, evArrival, 4}, {5, evArrival, 10}, {5, evTick, 0},
	}
	var q eventQueue
	for _, k := range in {
		q.push(event{at: k.At, kind: k.Kind, node: k.Node})
	}
	var got []key
	for q.len() > 0 {
		e := q.pop()
		got = append(got, key{e.at, e.kind, e.node})
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("event order (-want +got):\n%s", d)
	}
}

// TestEventOrderRandom checks the order on many random events against a
// plain sort of the same keys.
func TestEventOrderRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var q eventQueue
	for i := range 5000 {
		q.push(event{at: time.Duration(r.IntN(50)), kind: eventKind(r.IntN(int(numEventKinds))), node: int32(i)})
		if r.IntN(3) == 0 {
			q.pop()
		}
	}
	var prev event
	for i := 0; q.len() > 0; i++ {
		e := q.pop()
		if i > 0 && (e.at < prev.at || (e.at == prev.at && (e.kind < prev.kind || (e.kind == prev.kind && e.seq < prev.seq)))) {
			t.Fatalf("%+v came out after %+v", e, prev)
		}
		prev = e
	}
}

func TestLlama3Calibration(t *testing.T) {
	m := Llama3Failures()
	hours := 54.0 * 24
	got := (16384*m.GPURate + 2048*m.NodeRate) * hours
	if math.Abs(got-419) > 1e-9 {
		t.Errorf("16,384 GPUs for 54 days: %v interruptions, want 419", got)
	}
	if share := 16384 * m.GPURate * hours / got; math.Abs(share-0.587) > 1e-12 {
		t.Errorf("GPU share %v, want 0.587", share)
	}
}

// TestFailureProcess draws the failures of a 16,384-GPU fleet for a long
// span and checks the count and the GPU share against Llama 3's figures.
func TestFailureProcess(t *testing.T) {
	f, err := topology.Generate("ndv5", 16384)
	if err != nil {
		t.Fatal(err)
	}
	p := newFailureProcess(Llama3Failures(), f, 42)
	const days = 54 * 40 // 40 Llama 3 runs: ~16,760 failures, sd ~0.8%
	var n, gpu int
	hits := make([]int, len(f.Nodes))
	for {
		at, node, cause := p.draw()
		if at > days*24*time.Hour {
			break
		}
		n++
		hits[node]++
		if cause == causeGPU {
			gpu++
		}
	}
	if want := 419.0 * 40; math.Abs(float64(n)-want) > 0.04*want {
		t.Errorf("%d failures in 40 x 54 days, want about %v", n, want)
	}
	if share := float64(gpu) / float64(n); math.Abs(share-0.587) > 0.02 {
		t.Errorf("GPU share %.3f, want about 0.587", share)
	}
	// Uniform nodes are hit uniformly: each half of the fleet gets half.
	half := 0
	for _, h := range hits[:len(hits)/2] {
		half += h
	}
	if frac := float64(half) / float64(n); math.Abs(frac-0.5) > 0.02 {
		t.Errorf("first half of the nodes got %.3f of the failures", frac)
	}
	// The same seed gives the same failures.
	a, b := newFailureProcess(Llama3Failures(), f, 7), newFailureProcess(Llama3Failures(), f, 7)
	for range 100 {
		t1, n1, c1 := a.draw()
		t2, n2, c2 := b.draw()
		if t1 != t2 || n1 != n2 || c1 != c2 {
			t.Fatal("same seed, different failures")
		}
	}
	if newFailureProcess(FailureModel{}, f, 1) != nil {
		t.Error("a disabled model should draw nothing")
	}
}

func TestPercentileAndJain(t *testing.T) {
	s := []float32{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	sum := summarize(s)
	want := Summary{Mean: 5.5, P50: 5, P90: 9, P99: 10, Max: 10}
	if d := cmp.Diff(want, sum); d != "" {
		t.Error(d)
	}
	if got := summarize(nil); got != (Summary{}) {
		t.Errorf("empty summary %+v", got)
	}
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{{[]float64{1, 1, 1, 1}, 1}, {[]float64{1, 0, 0, 0}, 0.25}, {[]float64{1, 3}, 0.8}, {nil, 1}} {
		if got := jain(tc.xs); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("jain(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
}

func TestSeries(t *testing.T) {
	var s series
	s.set(0, 2)
	s.set(30*time.Second, 4) // bucket 0: 2 for 30 s, 4 for 30 s
	s.set(90*time.Second, 0) // bucket 1: 4 for 30 s, 0 for 30 s
	pts := s.points(2 * time.Minute)
	want := []Point{{0, 3}, {time.Minute, 2}}
	if d := cmp.Diff(want, pts); d != "" {
		t.Errorf("points (-want +got):\n%s", d)
	}
	// A long run stays bounded and keeps the integral.
	var l series
	l.set(0, 1)
	end := time.Duration(maxBuckets*10) * time.Minute
	for tm := time.Duration(0); tm < end; tm += 7 * time.Minute {
		l.set(tm, float64(tm/time.Minute%3))
	}
	pts = l.points(end)
	if len(pts) > maxBuckets {
		t.Fatalf("%d buckets, want at most %d", len(pts), maxBuckets)
	}
	var integral float64
	for i, p := range pts {
		hi := end
		if i+1 < len(pts) {
			hi = pts[i+1].T
		}
		integral += p.V * (hi - p.T).Seconds()
	}
	var want2 float64
	for tm := time.Duration(0); tm < end; tm += 7 * time.Minute {
		want2 += float64(tm/time.Minute%3) * (min(tm+7*time.Minute, end) - tm).Seconds()
	}
	if math.Abs(integral-want2) > 1e-6*want2 {
		t.Errorf("integral %v, want %v", integral, want2)
	}
}
