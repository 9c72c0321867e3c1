package server

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
	"gpucloud/internal/testbin"
	"gpucloud/internal/testnet"
)

// TestMain removes the gpucloud binary the tests built (testbin).
func TestMain(m *testing.M) { testbin.Main(m) }

// These tests run the real gpucloud binary as separate processes on
// 127.0.0.1 and kill them with SIGKILL: what a crash does to a process
// cannot be faked inside one.

type proc struct {
	t    *testing.T
	name string
	args []string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, args: args}
	p.start()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) start() {
	p.t.Helper()
	f, err := os.OpenFile(filepath.Join(p.t.TempDir(), p.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	p.log = f
	p.cmd = exec.Command(testbin.Gpucloud(p.t), p.args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(p.cmd, p.done)
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	p.log.Close()
}

func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.log.Name())
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

func waitHTTP(t *testing.T, url string, d time.Duration) {
	t.Helper()
	c := client.New([]string{url}, "", client.Options{Timeout: time.Second})
	c.Retry = 0
	waitFor(t, d, url+" healthy", func() bool {
		return c.Do(context.Background(), "GET", "/healthz", nil, nil) == nil
	})
}

func readToken(t *testing.T, dirs ...string) string {
	t.Helper()
	var tok string
	waitFor(t, 20*time.Second, "admin.token", func() bool {
		for _, d := range dirs {
			if b, err := os.ReadFile(filepath.Join(d, "admin.token")); err == nil {
				tok = strings.TrimSpace(string(b))
				return true
			}
		}
		return false
	})
	return tok
}

// submitter submits jobs until stopped and remembers which were
// acknowledged and which were only attempted (the answer was lost).
type submitter struct {
	c         *client.Client
	mu        sync.Mutex
	acked     map[string]time.Time
	attempted map[string]bool
	errs      int
	stop      chan struct{}
	done      chan struct{}
}

func startSubmitter(c *client.Client, every time.Duration, job func(i int) *api.Job) *submitter {
	s := &submitter{c: c, acked: map[string]time.Time{}, attempted: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for i := 0; ; i++ {
			select {
			case <-s.stop:
				return
			case <-time.After(every):
			}
			j := job(i)
			j.Metadata.ID = client.NewJobID()
			s.mu.Lock()
			s.attempted[j.Metadata.ID] = true
			s.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			_, err := c.Submit(ctx, j)
			cancel()
			s.mu.Lock()
			if err == nil || client.IsCode(err, 409) {
				// 409 for our own fresh ID: an earlier attempt got through.
				s.acked[j.Metadata.ID] = time.Now()
			} else {
				s.errs++
			}
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *submitter) finish() {
	close(s.stop)
	<-s.done
}

// firstAckAfter returns the first acknowledgement after t.
func (s *submitter) firstAckAfter(t time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first time.Time
	for _, at := range s.acked {
		if at.After(t) && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first
}

// checkNothingLost lists every job and checks that each acknowledged one
// is there exactly once and nothing appeared that was never attempted.
func checkNothingLost(t *testing.T, c *client.Client, s *submitter) []api.Job {
	t.Helper()
	ctx := context.Background()
	var all []api.Job
	after := ""
	for {
		l, err := c.Jobs(ctx, client.JobFilter{Limit: 1000, After: after})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, l.Items...)
		if len(l.Items) < 1000 {
			break
		}
		after = l.Items[len(l.Items)-1].Metadata.ID
	}
	seen := map[string]int{}
	for _, j := range all {
		seen[j.Metadata.ID]++
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.acked {
		if seen[id] != 1 {
			t.Errorf("acknowledged job %s found %d times", id, seen[id])
		}
	}
	for _, j := range all {
		if strings.HasPrefix(j.Metadata.Name, "short") && !s.attempted[j.Metadata.ID] {
			t.Errorf("job %s (%s) was never submitted", j.Metadata.ID, j.Metadata.Name)
		}
	}
	return all
}

// allocationsFit checks that no node is promised more GPUs than it has.
func allocationsFit(t *testing.T, jobs []api.Job, gpusPerNode int) {
	t.Helper()
	used := map[string]uint64{}
	for _, j := range jobs {
		if j.Status.Phase != api.PhaseRunning || j.Status.Placement == nil {
			continue
		}
		nodes, err := j.Status.Placement.Expand()
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if used[n.Node]&n.GPUs != 0 {
				t.Errorf("GPUs %b of %s given twice (job %s)", used[n.Node]&n.GPUs, n.Node, j.Metadata.ID)
			}
			used[n.Node] |= n.GPUs
		}
	}
}

func TestCrashRestartLosesNothing(t *testing.T) {
	testbin.Gpucloud(t)
	dir := t.TempDir()
	port := testnet.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	args := []string{"server", "--data-dir", dir, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--etcd-client-url", fmt.Sprintf("http://127.0.0.1:%d", testnet.FreePort(t)),
		"--etcd-peer-url", fmt.Sprintf("http://127.0.0.1:%d", testnet.FreePort(t)),
		"--node-lease-ttl", "15s", "--cycle-interval", "50ms", "--log-level", "info"}
	srv := startProc(t, "server", args...)
	waitHTTP(t, url, 30*time.Second)
	admin := client.New([]string{url}, readToken(t, dir), client.Options{})
	admin.Retry = 40 * time.Second
	ctx := context.Background()

	// Two nodes of 4 GPUs. "keep" jobs hold their GPUs until the end; the
	// stream of short jobs finishes at once.
	exit := func(a api.Assignment, p api.Process) (int, bool) { return 0, strings.HasPrefix(a.Name, "keep") }
	agents := []*fakeAgent{startFakeAgent(t, admin, "node-a", 4, exit), startFakeAgent(t, admin, "node-b", 4, exit)}
	keep := testJob("keep", 2, 2)
	kj, err := admin.Submit(ctx, keep)
	if err != nil {
		t.Fatal(err)
	}
	running := waitPhase(t, admin, kj.Metadata.ID, api.PhaseRunning, 20*time.Second)

	sub := startSubmitter(admin, 5*time.Millisecond, func(i int) *api.Job { return testJob(fmt.Sprintf("short-%d", i), 1, 1) })
	// Kill -9 at random moments (the seed is logged), which fall at
	// different points of the write path: during submissions, between a
	// placement and its reports, in the middle of a resync.
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	t.Logf("kill times seeded with %d", seed)
	for i := 0; i < 3; i++ {
		d := 200*time.Millisecond + time.Duration(rng.Int63n(int64(1300*time.Millisecond)))
		time.Sleep(d)
		srv.kill()
		t.Logf("crash %d: killed with SIGKILL after %v", i+1, d.Round(time.Millisecond))
		srv.start()
		waitHTTP(t, url, 30*time.Second)
	}
	time.Sleep(time.Second)
	sub.finish()
	sub.mu.Lock()
	acked, attempted := len(sub.acked), len(sub.attempted)
	sub.mu.Unlock()
	if acked < 20 {
		t.Fatalf("only %d submissions acknowledged (%d errors):\n%s", acked, sub.errs, srv.logTail())
	}
	t.Logf("%d submissions acknowledged of %d attempted across 3 crashes", acked, attempted)

	// Everything acknowledged converges: short jobs succeed once each.
	deadline := time.Now().Add(60 * time.Second)
	for {
		l, err := admin.Jobs(ctx, client.JobFilter{Limit: 100000})
		if err != nil {
			t.Fatal(err)
		}
		phases := map[api.Phase]int{}
		var stuck *api.Job
		for i, j := range l.Items {
			if strings.HasPrefix(j.Metadata.Name, "short") {
				phases[j.Status.Phase]++
				if j.Status.Phase != api.PhaseSucceeded && stuck == nil {
					stuck = &l.Items[i]
				}
			}
		}
		if stuck == nil {
			break
		}
		if time.Now().After(deadline) {
			ns, _ := admin.Nodes(ctx)
			for _, n := range ns {
				t.Logf("node %s %s", n.Metadata.Name, n.Status.Phase)
			}
			t.Fatalf("short jobs did not all succeed: %v; e.g. %s %+v\n%s", phases, stuck.Metadata.ID, stuck.Status, srv.logTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
	all := checkNothingLost(t, admin, sub)
	allocationsFit(t, all, 4)
	for _, j := range all {
		if strings.HasPrefix(j.Metadata.Name, "short") && j.Status.Generation != 1 {
			t.Errorf("short job %s ran %d generations", j.Metadata.ID, j.Status.Generation)
		}
	}
	// The running gang survived the crashes as it was: same generation,
	// same placement, its ranks never restarted.
	after, err := admin.Job(ctx, kj.Metadata.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Status.Phase != api.PhaseRunning || after.Status.Generation != running.Status.Generation ||
		after.Status.Placement.Groups[0] != running.Status.Placement.Groups[0] {
		t.Fatalf("running job changed across crashes: before %+v after %+v", running.Status, after.Status)
	}
	nodes, _ := running.Status.Placement.Expand()
	on := map[string]bool{}
	for _, n := range nodes {
		on[n.Node] = true
	}
	for _, a := range agents {
		if !on[a.name] {
			continue
		}
		a.mu.Lock()
		if g := a.seen[kj.Metadata.ID]; g != running.Status.Generation {
			t.Errorf("agent %s ran generation %d of the kept job", a.name, g)
		}
		a.mu.Unlock()
	}
}
