package sim

import (
	"os"
	"testing"

	"gpucloud/internal/sim/workload"
)

// phillyFull is the full Philly job list, outside the repository.
const phillyFull = "../../../shared/traces/philly/adaptdl_philly_jobs.csv"

func loadPhillyFull(b testing.TB) *workload.Trace {
	b.Helper()
	if _, err := os.Stat(phillyFull); err != nil {
		b.Skipf("the full Philly job list is not here (%v); it lives in /work/shared/traces/philly", err)
	}
	tr, err := workload.Load(phillyFull, workload.FormatPhilly)
	if err != nil {
		b.Fatal(err)
	}
	return tr
}

// BenchmarkPhilly replays the full 82,247-job Philly list on a 2,048-GPU
// ndv5 fleet with failures, under the default policy.
func BenchmarkPhilly(b *testing.B) {
	tr := loadPhillyFull(b)
	f := fleet(b, 2048)
	for b.Loop() {
		r, err := Run(DefaultConfig(f), TraceInput(tr))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.EventsPerS, "events/s")
	}
}

// BenchmarkSynthetic131k replays one million Gavel-like jobs, offered at 80%
// of a 131,072-GPU ndv5 fleet, with failures.
func BenchmarkSynthetic131k(b *testing.B) { benchSynthetic131k(b, workload.MixGavel) }

// BenchmarkSyntheticLLM131k replays one million jobs of the LLM-era mix
// (pre-training gangs of 1,024 to 16,384 GPUs among fine-tuning and small
// jobs), offered at 80% of a 131,072-GPU ndv5 fleet, with failures: the
// case where a blocked gang waits behind 17,000 running jobs.
func BenchmarkSyntheticLLM131k(b *testing.B) { benchSynthetic131k(b, workload.MixLLM) }

func benchSynthetic131k(b *testing.B, mix workload.Mix) {
	f := fleet(b, 131072)
	s := workload.Synthetic{Mix: mix, Jobs: 1_000_000, MaxGPUs: f.NumGPUs(), Seed: 1}
	s.Rate = s.RateForLoad(0.8, f.NumGPUs())
	for b.Loop() {
		r, err := Run(DefaultConfig(f), SyntheticInput(s))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.EventsPerS, "events/s")
	}
}
