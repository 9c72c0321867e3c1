package server

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"gpucloud/internal/api"
)

func TestRestartBackoffDoubles(t *testing.T) {
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute}
	for i, w := range want {
		if got := restartBackoff(i + 1); got != w {
			t.Errorf("restart %d: %v, want %v", i+1, got, w)
		}
	}
	if got := restartBackoff(1000); got != time.Minute {
		t.Errorf("restart 1000: %v", got)
	}
}

// A gang that fails restarts after 1 s, then 2 s: the agents get the next
// generation only then, and the job's events say so.
func TestRestartsBackOff(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	var mu sync.Mutex
	ran := map[int]time.Time{} // generation -> when its rank ran
	startFakeAgent(t, ts.admin, "n1", 1, func(a api.Assignment, p api.Process) (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := ran[a.Generation]; !ok {
			ran[a.Generation] = time.Now()
		}
		if a.Generation < 3 {
			return 1, false
		}
		return 0, false
	})
	j := testJob("flaky", 1, 1)
	j.Spec.RestartPolicy.MaxRestarts = 2
	j, err := ts.admin.Submit(ctx, j)
	if err != nil {
		t.Fatal(err)
	}
	done := waitPhase(t, ts.admin, j.Metadata.ID, api.PhaseSucceeded, 20*time.Second)
	if done.Status.Restarts != 2 || done.Status.Generation != 3 {
		t.Fatalf("status %+v", done.Status)
	}
	mu.Lock()
	gap1, gap2 := ran[2].Sub(ran[1]), ran[3].Sub(ran[2])
	mu.Unlock()
	// A little slack below: the failure is judged a moment after the rank ran.
	if gap1 < 900*time.Millisecond || gap2 < 1900*time.Millisecond {
		t.Errorf("generations ran %v then %v apart, want at least 1s then 2s", gap1, gap2)
	}
	if gap2 < gap1 {
		t.Errorf("backoff did not grow: %v then %v", gap1, gap2)
	}
	evs, err := ts.admin.JobEvents(ctx, j.Metadata.ID)
	if err != nil {
		t.Fatal(err)
	}
	var restarts []string
	for _, ev := range evs {
		if ev.Reason == "Restarted" {
			restarts = append(restarts, ev.Message)
		}
	}
	if len(restarts) != 2 || !strings.HasSuffix(restarts[0], "restart 1 of 2 in 1s") || !strings.HasSuffix(restarts[1], "restart 2 of 2 in 2s") {
		t.Errorf("Restarted events: %q", restarts)
	}
}
