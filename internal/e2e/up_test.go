package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/testbin"
)

// TestMain removes the gpucloud binary the tests built (testbin).
func TestMain(m *testing.M) { testbin.Main(m) }

// repoRoot is the module root (this file is internal/e2e/up_test.go).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// env is a user: a home of their own, nothing of gpucloud's set.
type env struct {
	t    *testing.T
	bin  string
	home string
	root string
}

func (e *env) environ() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GPUCLOUD_") && !strings.HasPrefix(kv, "HOME=") {
			out = append(out, kv)
		}
	}
	return append(out, "HOME="+e.home)
}

// run runs a CLI command and returns its standard output.
func (e *env) run(args ...string) (string, error) {
	e.t.Helper()
	cmd := exec.Command(e.bin, args...)
	cmd.Dir = e.root
	cmd.Env = e.environ()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("gpucloud %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (e *env) job(id string) *api.Job {
	e.t.Helper()
	out, err := e.run("get", "job", id, "-o", "json")
	if err != nil {
		e.t.Fatal(err)
	}
	var j api.Job
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		e.t.Fatalf("get job -o json: %v\n%s", err, out)
	}
	return &j
}

func (e *env) waitPhase(id string, phase api.Phase, d time.Duration) *api.Job {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for {
		j := e.job(id)
		if j.Status.Phase == phase {
			return j
		}
		if time.Now().After(deadline) || (j.Status.Phase.Terminal() && !phase.Terminal()) {
			e.t.Fatalf("job %s is %s (%s), want %s", id, j.Status.Phase, j.Status.Reason, phase)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// up is a running `gpucloud up`.
type up struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan error
}

func (u *up) output() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.out.String()
}

func (e *env) startUp(listen string) *up {
	e.t.Helper()
	u := &up{done: make(chan error, 1)}
	u.cmd = exec.Command(e.bin, "up", "--listen", listen, "--fake-gpus", "2", "--grace-period", "3s")
	u.cmd.Dir = e.root
	u.cmd.Env = e.environ()
	pr, pw := io.Pipe()
	u.cmd.Stdout, u.cmd.Stderr = pw, pw
	if err := u.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := false
		for sc.Scan() {
			u.mu.Lock()
			u.out.WriteString(sc.Text() + "\n")
			u.mu.Unlock()
			if !once && strings.HasPrefix(sc.Text(), "Ctrl-C stops") {
				once = true
				close(ready)
			}
		}
	}()
	go func() {
		err := u.cmd.Wait()
		pw.Close()
		u.done <- err
	}()
	e.t.Cleanup(func() {
		if u.cmd.ProcessState == nil {
			u.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-u.done:
			case <-time.After(20 * time.Second):
				u.cmd.Process.Kill()
			}
		}
	})
	select {
	case <-ready:
	case err := <-u.done:
		e.t.Fatalf("gpucloud up exited: %v\n%s", err, u.output())
	case <-time.After(60 * time.Second):
		e.t.Fatalf("gpucloud up not ready after a minute:\n%s", u.output())
	}
	return u
}

func (u *up) stop(t *testing.T) string {
	t.Helper()
	u.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-u.done:
		if err != nil {
			t.Fatalf("gpucloud up after Ctrl-C: %v\n%s", err, u.output())
		}
	case <-time.After(30 * time.Second):
		u.cmd.Process.Kill()
		t.Fatalf("gpucloud up did not stop within 30s of Ctrl-C:\n%s", u.output())
	}
	return u.output()
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestUp is a user's first minutes: up, submit the one-GPU example and a
// long job, watch them with get and logs, Ctrl-C (the long job's ranks are
// stopped), up again (everything is still there and the long job runs
// again), cancel.
func TestUp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs gpucloud up")
	}
	e := &env{t: t, home: t.TempDir(), root: repoRoot(t)}
	e.bin = testbin.Gpucloud(t)
	listen := freeAddr(t)
	u := e.startUp(listen)
	banner := u.output()
	for _, want := range []string{"http://" + listen, filepath.Join(e.home, ".gpucloud", "admin.token"), "2 emulated", "gpucloud submit -f examples/hello/job.yaml"} {
		if !strings.Contains(banner, want) {
			t.Errorf("the banner lacks %q:\n%s", want, banner)
		}
	}

	// The CLI works at once: up wrote ~/.gpucloud/config.
	out, err := e.run("submit", "-f", "examples/hello/job.yaml", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var hello api.Job
	if err := json.Unmarshal([]byte(out), &hello); err != nil || hello.Metadata.ID == "" {
		t.Fatalf("submit -o json: %v\n%s", err, out)
	}
	pidFile := filepath.Join(e.home, "sleeper.pid")
	long := filepath.Join(e.home, "long.yaml")
	os.WriteFile(long, []byte(fmt.Sprintf(`apiVersion: gpucloud/v1
kind: Job
metadata: {name: sleeper}
spec:
  replicas: 1
  gpusPerReplica: 1
  command: [sh, -c, 'echo $$ > %s; echo generation $GPUCLOUD_RESTART_COUNT; exec sleep 300']
`, pidFile)), 0o644)
	sleeperID, err := e.run("submit", "-f", long, "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	sleeperID = strings.TrimSpace(sleeperID)

	e.waitPhase(hello.Metadata.ID, api.PhaseSucceeded, 30*time.Second)
	// The agent ships a rank's last log lines before it reports the exit
	// that makes the job Succeeded: they are there at once.
	logs, err := e.run("logs", hello.Metadata.ID)
	if err != nil || !strings.Contains(logs, "[rank 0] done: y = ") {
		t.Errorf("logs: %v\n%s", err, logs)
	}
	e.waitPhase(sleeperID, api.PhaseRunning, 15*time.Second)
	var pid int
	deadline := time.Now().Add(10 * time.Second)
	for pid == 0 && time.Now().Before(deadline) {
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		time.Sleep(100 * time.Millisecond)
	}
	if pid == 0 {
		t.Fatal("the long job never started its rank")
	}

	// Ctrl-C: the rank is stopped, the job goes back to the queue.
	stopped := u.stop(t)
	if !strings.Contains(stopped, "stopped; the state is in") {
		t.Errorf("no clean stop:\n%s", stopped)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the long job's rank (pid %d) outlived gpucloud up: kill -0 says %v", pid, err)
	}
	if _, err := e.run("get", "jobs"); err == nil || !strings.Contains(err.Error(), "cannot reach the gpucloud server") {
		t.Errorf("get jobs with up stopped: %v", err)
	}

	// up again: the state is all there and the long job runs again.
	u = e.startUp(listen)
	if j := e.job(hello.Metadata.ID); j.Status.Phase != api.PhaseSucceeded {
		t.Errorf("after the restart the one-GPU job is %s", j.Status.Phase)
	}
	j := e.waitPhase(sleeperID, api.PhaseRunning, 20*time.Second)
	if j.Status.Requeues != 1 || j.Status.Restarts != 0 || j.Status.Generation != 2 {
		t.Errorf("after the restart: requeues %d restarts %d generation %d; want 1 0 2", j.Status.Requeues, j.Status.Restarts, j.Status.Generation)
	}
	if out, err := e.run("cancel", "sleeper"); err != nil || !strings.Contains(out, "cancelled") {
		t.Errorf("cancel: %v %s", err, out)
	}
	e.waitPhase(sleeperID, api.PhaseCancelled, 5*time.Second)
	u.stop(t)
}
