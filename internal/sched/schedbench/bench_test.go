package schedbench

import (
	"fmt"
	"strings"
	"testing"

	"gpucloud/internal/sched"
)

// TestRunSmallFleet runs the harness on a small fleet and checks that it
// measures what it says: the occupancy reached, placements that succeed,
// a cycle that places jobs, gangs that fit measured for locality.
func TestRunSmallFleet(t *testing.T) {
	// 32,768 GPUs: at 90% a 1,024-GPU gang can still fit.
	r, err := Run(Options{GPUs: 32768, Occupancy: 0.9, Samples: 30, Cycles: 1, Pending: 2000, LocalityGangs: 100})
	if err != nil {
		t.Fatal(err)
	}
	if r.Occupancy < 0.88 || r.Occupancy > 0.9 {
		t.Errorf("occupancy %.3f, want just under 0.9", r.Occupancy)
	}
	if r.PlaceMisses != 0 {
		t.Errorf("%d timed placements found no room at 90%% occupancy", r.PlaceMisses)
	}
	if r.CyclePlaced == 0 || r.LocalityFitting == 0 || r.LocalityGangs != 100 {
		t.Errorf("cycle placed %d, locality over %d gangs (%d fitting): nothing measured", r.CyclePlaced, r.LocalityGangs, r.LocalityFitting)
	}
	if r.LocalityOptimalFrac < 0.99 {
		t.Errorf("locality: %.3f of fitting gangs at the fewest leaves, want at least 0.99", r.LocalityOptimalFrac)
	}
	if r.BytesPerGPU <= 0 || r.BytesPerGPU > 400 {
		t.Errorf("bytes per GPU %.1f: implausible", r.BytesPerGPU)
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	if _, err := Run(Options{GPUs: 1001}); err == nil {
		t.Error("1001 GPUs is not a multiple of 8: want an error")
	}
	if _, err := Run(Options{GPUs: 1024}); err == nil || !strings.Contains(err.Error(), "at least 2048 GPUs") {
		t.Errorf("1024 GPUs: got %v, want a refusal (the gang would not fit)", err)
	}
	if _, err := Run(Options{GPUs: 64, Occupancy: 1.5}); err == nil {
		t.Error("occupancy 1.5: want an error")
	}
}

var filled = map[int]*Filled{}

func fleet(b *testing.B, gpus int) *Filled {
	b.Helper()
	if f := filled[gpus]; f != nil {
		return f
	}
	f, err := Fill(Options{GPUs: gpus, Occupancy: 0.9})
	if err != nil {
		b.Fatal(err)
	}
	filled[gpus] = f
	return f
}

func benchPlace(b *testing.B, gpus int, j sched.Job) {
	fl := fleet(b, gpus)
	s := fl.S.Clone()
	i := 0
	for b.Loop() {
		j.ID = fmt.Sprint("b", i)
		i++
		if err := s.Submit(j); err != nil {
			b.Fatal(err)
		}
		if out := s.Schedule(fl.Now); len(out) != 1 {
			b.Fatalf("no placement: %v", s.PendingReason(j.ID))
		}
		b.StopTimer()
		_ = s.Cancel(j.ID)
		b.StartTimer()
	}
}

// go test ./internal/sched/schedbench -bench . -benchtime 2000x
func BenchmarkPlaceSingle131k(b *testing.B) {
	benchPlace(b, 131072, sched.Job{Replicas: 1, GPUsPerReplica: 1, Preemptible: true})
}

func BenchmarkPlaceGang1024_131k(b *testing.B) {
	benchPlace(b, 131072, sched.Job{Replicas: 128, GPUsPerReplica: 8, TPSize: 8, Preemptible: true})
}

func BenchmarkCycle10kPending131k(b *testing.B) {
	fl := fleet(b, 131072)
	for b.Loop() {
		b.StopTimer()
		s := fl.S.Clone()
		m := newMixer(99, 8)
		for range 10000 {
			_ = s.Submit(m.job(fl.Now))
		}
		b.StartTimer()
		s.Schedule(fl.Now)
	}
}
