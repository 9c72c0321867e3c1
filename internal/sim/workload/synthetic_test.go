package workload

import (
	"fmt"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func drain(s Source) []Job {
	var out []Job
	for {
		j, ok := s.Next()
		if !ok {
			return out
		}
		out = append(out, j)
	}
}

func TestSyntheticDeterministic(t *testing.T) {
	s := Synthetic{Mix: MixLLM, Jobs: 5000, Rate: 100, Seed: 7, MaxGPUs: 4096}
	a, b := drain(s.Source()), drain(s.Source())
	if d := cmp.Diff(a, b); d != "" {
		t.Fatalf("same seed, different jobs:\n%s", d)
	}
	s.Seed = 8
	if c := drain(s.Source()); cmp.Equal(a, c) {
		t.Fatal("seeds 7 and 8 gave the same jobs")
	}
	if len(a) != 5000 || s.Source().Len() != 5000 {
		t.Fatalf("got %d jobs, want 5000", len(a))
	}
	for i, j := range a {
		if err := j.Validate(); err != nil {
			t.Fatal(err)
		}
		if i > 0 && j.Submit < a[i-1].Submit {
			t.Fatal("arrivals out of order")
		}
		if j.GPUs > 4096 {
			t.Fatalf("job %s has %d GPUs, more than MaxGPUs", j.ID, j.GPUs)
		}
	}
}

// TestGavelDistributions checks the generator against the distributions it
// claims: Poisson arrivals at the rate, Gavel's durations, the GPU mix.
func TestGavelDistributions(t *testing.T) {
	const n = 200000
	s := Synthetic{Mix: MixGavel, Jobs: n, Rate: 360, Seed: 1}
	jobs := drain(s.Source())
	var short, gpuSecs float64
	gpus := map[int]int{}
	for _, j := range jobs {
		d := j.Duration.Seconds()
		if d < 60*math.Pow(10, 1.5)-1e-6 || d > 60*1e4+1e-6 {
			t.Fatalf("duration %v outside Gavel's range", j.Duration)
		}
		if d < 60e3 {
			short++
		}
		gpus[j.GPUs]++
		gpuSecs += d * float64(j.GPUs)
	}
	near := func(what string, got, want, tol float64) {
		t.Helper()
		if math.Abs(got-want) > tol*want {
			t.Errorf("%s: got %.4g, want %.4g within %.0f%%", what, got, want, tol*100)
		}
	}
	near("short-job fraction", short/n, 0.8, 0.01)
	near("mean inter-arrival (s)", jobs[n-1].Submit.Seconds()/(n-1), 10, 0.01)
	for i, v := range GavelGPUs.Values {
		near(fmt.Sprintf("share of %d-GPU jobs", v), float64(gpus[v])/n, GavelGPUs.Weights[i], 0.03)
	}
	near("mean GPU-seconds per job", gpuSecs/n, s.MeanGPUSeconds(), 0.03)
	// The offered load of RateForLoad is the one asked for.
	rate := s.RateForLoad(0.8, 1000)
	near("offered load", rate*s.MeanGPUSeconds()/3600/1000, 0.8, 1e-9)
}

func TestLLMMix(t *testing.T) {
	const n = 400000
	s := Synthetic{Mix: MixLLM, Jobs: n, Rate: 1000, Seed: 3, MaxGPUs: 131072}
	var pre, ft, small float64
	var nPre int
	for _, j := range drain(s.Source()) {
		g := j.Duration.Seconds() * float64(j.GPUs)
		switch {
		case j.Tenant == "pretrain":
			pre += g
			nPre++
			if j.GPUs < 1024 || j.GPUs > 16384 || j.Priority != 100 {
				t.Fatalf("bad pre-training gang %+v", j)
			}
		case j.Priority == 10:
			ft += g
		default:
			small += g
		}
	}
	total := pre + ft + small
	// Pre-training gangs are few and heavy-tailed: a loose bound.
	if f := pre / total; math.Abs(f-LLMShares.Pretrain) > 0.1 {
		t.Errorf("pre-training share %.3f, want about %.2f", f, LLMShares.Pretrain)
	}
	if f := ft / total; math.Abs(f-LLMShares.Finetune) > 0.05 {
		t.Errorf("fine-tuning share %.3f, want about %.2f", f, LLMShares.Finetune)
	}
	if nPre == 0 || nPre > n/1000 {
		t.Errorf("%d pre-training gangs in %d jobs: want a few", nPre, n)
	}
	small1 := Synthetic{Mix: MixLLM, Jobs: 1, Rate: 1, MaxGPUs: 512}
	if err := small1.Validate(); err == nil {
		t.Error("the llm mix on 512 GPUs should be refused: no pre-training gang fits")
	}
}

func TestParseDist(t *testing.T) {
	d, err := ParseDist("1:0.7, 2:0.1,4:0.15,8:0.05")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(GavelGPUs, d); d != "" {
		t.Error(d)
	}
	if got := d.String(); got != "1:0.7,2:0.1,4:0.15,8:0.05" {
		t.Errorf("String() = %q", got)
	}
	for _, bad := range []string{"", "1", "x:1", "1:0", "1:-1", "0:1", "1:1,1:2", "1:NaN"} {
		if _, err := ParseDist(bad); err == nil {
			t.Errorf("ParseDist(%q) accepted", bad)
		}
	}
}
