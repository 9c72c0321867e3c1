package server

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
)

// fakeAgent speaks the agent protocol for real over HTTP, without
// processes: each rank of each new assignment "runs" by reporting started,
// a line of output, and the exit code that exit() chooses.
type fakeAgent struct {
	c      *client.Client
	name   string
	gpus   int
	exit   func(a api.Assignment, p api.Process) (code int, hold bool)
	cancel context.CancelFunc
	done   sync.WaitGroup

	mu      sync.Mutex
	seen    map[string]int // job -> generation started
	running map[string]int
	sets    int
}

func startFakeAgent(t testing.TB, c *client.Client, name string, gpus int, exit func(api.Assignment, api.Process) (int, bool)) *fakeAgent {
	t.Helper()
	a := &fakeAgent{c: c, name: name, gpus: gpus, exit: exit, seen: map[string]int{}, running: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	if _, err := c.Register(ctx, registration(name, gpus)); err != nil {
		t.Fatal(err)
	}
	a.done.Add(2)
	go a.heartbeats(ctx)
	go a.watch(ctx)
	t.Cleanup(a.stop)
	return a
}

func (a *fakeAgent) stop() {
	a.cancel()
	a.done.Wait()
}

func (a *fakeAgent) heartbeats(ctx context.Context) {
	defer a.done.Done()
	for {
		a.mu.Lock()
		hb := &api.Heartbeat{}
		for j, g := range a.running {
			hb.Running = append(hb.Running, api.RunningJob{Job: j, Generation: g})
		}
		a.mu.Unlock()
		err := a.c.Heartbeat(ctx, a.name, hb)
		if client.IsCode(err, 410) {
			a.c.Register(ctx, registration(a.name, a.gpus))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func (a *fakeAgent) watch(ctx context.Context) {
	defer a.done.Done()
	for ctx.Err() == nil {
		a.c.WatchAssignments(ctx, a.name, func(set api.AssignmentSet) error {
			a.mu.Lock()
			a.sets++
			a.mu.Unlock()
			for _, as := range set.Assignments {
				a.mu.Lock()
				g, ok := a.seen[as.Job]
				fresh := !ok || g < as.Generation
				if fresh {
					a.seen[as.Job] = as.Generation
					a.running[as.Job] = as.Generation
				}
				a.mu.Unlock()
				if fresh {
					go a.run(ctx, as)
				}
			}
			return nil
		})
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (a *fakeAgent) run(ctx context.Context, as api.Assignment) {
	var evs []api.RankEvent
	for _, p := range as.Processes {
		evs = append(evs, api.RankEvent{Job: as.Job, Generation: as.Generation, Rank: p.Rank, Event: api.RankStarted})
	}
	a.c.Report(ctx, a.name, evs...)
	evs = nil
	for _, p := range as.Processes {
		env := as.RankEnv(p)
		line := fmt.Sprintf("rank=%s world=%s gen=%d\n", env["RANK"], env["WORLD_SIZE"], as.Generation)
		a.c.UploadLog(ctx, a.name, &api.LogChunk{Job: as.Job, Generation: as.Generation, Rank: p.Rank, Data: []byte(line)})
		code, hold := a.exit(as, p)
		if hold {
			return // keeps running
		}
		evs = append(evs, api.RankEvent{Job: as.Job, Generation: as.Generation, Rank: p.Rank, Event: api.RankExited, ExitCode: code})
	}
	// Report the exit before dropping the job from heartbeats.
	a.c.Report(ctx, a.name, evs...)
	a.mu.Lock()
	delete(a.running, as.Job)
	a.mu.Unlock()
}

func exitZero(api.Assignment, api.Process) (int, bool) { return 0, false }
func hold(api.Assignment, api.Process) (int, bool)     { return 0, true }
