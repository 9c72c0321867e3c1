package launch

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"gopkg.in/natefinch/lumberjack.v2"
)

// ShimEnv marks the shim's own process; the rank does not inherit it.
const ShimEnv = "GPUCLOUD_RANK_SHIM"

// ExitStatus is how a rank ended, as its shim writes it.
type ExitStatus struct {
	ExitCode int    `json:"exitCode"`
	Signal   string `json:"signal,omitempty"`
	// Error is set when the command could not be started at all.
	Error      string    `json:"error,omitempty"`
	PID        int       `json:"pid,omitempty"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt"`
}

// Reason says in words how the rank ended ("" for exit code 0).
func (e ExitStatus) Reason() string {
	switch {
	case e.Error != "":
		return "launch error: " + e.Error
	case e.Signal != "":
		return "signal: " + e.Signal
	case e.ExitCode != 0:
		return "exit code " + strconv.Itoa(e.ExitCode)
	}
	return ""
}

// shimPID is what the shim writes first, before it starts the rank.
type shimPID struct {
	procIdentity
	BootID string `json:"bootId"`
}

// drainTimeout bounds how long the shim reads output after the rank ended
// (background children may hold the pipe open).
const drainTimeout = 2 * time.Second

// ShimSpec is what a shim runs: the agent writes it as JSON to the shim's
// spec pipe (fd 3).
type ShimSpec struct {
	Argv        []string `json:"argv"`
	Env         []string `json:"env"`
	Dir         string   `json:"dir"`
	ExitFile    string   `json:"exitFile"`
	PIDFile     string   `json:"pidFile"`
	Log         string   `json:"log"`
	LogMaxMB    int      `json:"logMaxMB"`
	LogMaxFiles int      `json:"logMaxFiles"`
}

// RunShim is the rank supervisor: `gpucloud agent shim --spec-fd 3`. The
// launcher starts it in a process group of its own, ahead of need (a pool
// of idle shims keeps the Go start-up off the launch path), and hands it a
// ShimSpec on the spec pipe. The shim writes its pid file, starts the
// command with stdout and stderr on one pipe, copies that pipe into a
// rotated log, and when the command ends writes its exit status and exits
// with the same code. It survives the agent: ranks keep running across
// agent restarts. An idle shim whose pipe closes without a spec (the
// agent stopped) exits 0.
func RunShim(args []string) int {
	fs := flag.NewFlagSet("shim", flag.ContinueOnError)
	specFD := fs.Int("spec-fd", 3, "file descriptor to read the ShimSpec (JSON) from")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// The agent's SIGTERM goes to the whole group; the shim stays to record
	// how the rank ended. A signal that reached the group before the rank
	// existed (a gang torn down as it starts) is passed on to the rank.
	// Caught (not ignored) signals are reset to their defaults in the rank.
	fw := &forwarder{}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		for s := range sigs {
			fw.received(s.(syscall.Signal))
		}
	}()

	// Descriptors the agent inherited from its own parent without
	// close-on-exec would pass to the rank: mark them all.
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		for _, e := range fds {
			if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 && fd != *specFD {
				syscall.CloseOnExec(fd)
			}
		}
	}
	f := os.NewFile(uintptr(*specFD), "spec")
	if f == nil {
		fmt.Fprintln(os.Stderr, "gpucloud shim: no spec pipe")
		return 2
	}
	b, err := io.ReadAll(f)
	f.Close() // the rank must not inherit it
	if err != nil {
		fmt.Fprintln(os.Stderr, "gpucloud shim: reading the spec:", err)
		return 2
	}
	if len(b) == 0 {
		return 0 // an idle shim the agent no longer needs
	}
	var sp ShimSpec
	if err := json.Unmarshal(b, &sp); err != nil || len(sp.Argv) == 0 || sp.ExitFile == "" || sp.Log == "" {
		fmt.Fprintf(os.Stderr, "gpucloud shim: bad spec (%v): %.200s\n", err, b)
		return 2
	}
	if sp.PIDFile != "" {
		id, err := identify(os.Getpid())
		if err == nil {
			b, _ := json.Marshal(shimPID{procIdentity: id, BootID: bootID()})
			err = writeFileAtomic(sp.PIDFile, b, false)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "gpucloud shim: pid file:", err)
		}
	}
	log := &lumberjack.Logger{Filename: sp.Log, MaxSize: max(sp.LogMaxMB, 1), MaxBackups: sp.LogMaxFiles}
	defer log.Close()

	st := runRank(&sp, log, fw)
	st.FinishedAt = time.Now()
	b, _ = json.Marshal(st)
	if err := writeFileAtomic(sp.ExitFile, b, false); err != nil {
		fmt.Fprintf(log, "gpucloud shim: writing the exit status: %v\n", err)
	}
	return st.ExitCode
}

// runRank starts the command with its output on one pipe copied to out,
// and waits.
func runRank(sp *ShimSpec, out io.Writer, fw *forwarder) ExitStatus {
	argv := sp.Argv
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(out, "gpucloud shim: %v\n", err)
		return ExitStatus{ExitCode: 127, Error: err.Error()}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = withoutShimEnv(sp.Env)
	cmd.Dir = sp.Dir
	start := time.Now()
	if err := cmd.Start(); err != nil {
		w.Close()
		r.Close()
		fmt.Fprintf(out, "gpucloud shim: cannot start %s: %v\n", argv[0], err)
		code := 127
		if errors.Is(err, os.ErrPermission) {
			code = 126
		}
		return ExitStatus{ExitCode: code, Error: err.Error(), StartedAt: start}
	}
	fw.started(cmd.Process)
	w.Close()
	copied := make(chan struct{})
	go func() {
		io.Copy(out, r)
		close(copied)
	}()
	err = cmd.Wait()
	st := ExitStatus{PID: cmd.Process.Pid, StartedAt: start}
	select {
	case <-copied:
	case <-time.After(drainTimeout):
		// A background process still holds the pipe: stop reading.
		r.SetReadDeadline(time.Now())
		<-copied
	}
	r.Close()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		ws := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			st.Signal = signalName(ws.Signal())
			st.ExitCode = 128 + int(ws.Signal())
		} else {
			st.ExitCode = ws.ExitStatus()
		}
	default:
		st.ExitCode = 127
		st.Error = err.Error()
	}
	return st
}

// forwarder passes on the signals the shim received before its rank
// existed. Go delivers signals to a goroutine some time after the kernel
// does, so the shim cannot tell a signal that came just before the fork
// from one just after: it passes on those it sees until earlyWindow after
// the start. A rank that got the group's signal too gets it twice, within
// its first moments, before it could install a handler: the default action
// runs once.
type forwarder struct {
	mu      sync.Mutex
	proc    *os.Process
	start   time.Time
	pending []syscall.Signal
}

const earlyWindow = time.Second

func (f *forwarder) received(s syscall.Signal) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.proc == nil:
		f.pending = append(f.pending, s)
	case time.Since(f.start) < earlyWindow:
		f.proc.Signal(s)
	}
}

func (f *forwarder) started(p *os.Process) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.proc, f.start = p, time.Now()
	for _, s := range f.pending {
		p.Signal(s)
	}
	f.pending = nil
}

func withoutShimEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, ShimEnv+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// signalName is the short name: SIGKILL -> "killed" is what Go prints;
// "SIGKILL" is what operators search for.
func signalName(s syscall.Signal) string {
	names := map[syscall.Signal]string{
		syscall.SIGKILL: "SIGKILL", syscall.SIGTERM: "SIGTERM", syscall.SIGINT: "SIGINT",
		syscall.SIGSEGV: "SIGSEGV", syscall.SIGABRT: "SIGABRT", syscall.SIGBUS: "SIGBUS",
		syscall.SIGHUP: "SIGHUP", syscall.SIGPIPE: "SIGPIPE", syscall.SIGFPE: "SIGFPE",
		syscall.SIGILL: "SIGILL", syscall.SIGQUIT: "SIGQUIT", syscall.SIGUSR1: "SIGUSR1",
		syscall.SIGUSR2: "SIGUSR2",
	}
	if n, ok := names[s]; ok {
		return n
	}
	return fmt.Sprintf("signal %d", int(s))
}
