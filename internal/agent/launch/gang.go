package launch

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"gpucloud/internal/api"
)

// gang is one job generation on this node. Its goroutine (run or recover)
// owns the ranks: it starts them, collects their exits and tears them all
// down when one fails or the control plane takes the assignment away.
type gang struct {
	l   *Launcher
	key Key
	rec *gangRecord // fields written under l.mu

	desired  bool // under l.mu: the last Sync listed it
	finished bool // under l.mu: every rank ended
	invalid  error
	after    []*gang // gangs of the same job that must end first

	stopReq chan string
	done    chan struct{}
	exits   chan rankExit

	// Owned by the goroutine.
	live    int
	tearing string // why the gang is being torn down
	killed  bool   // SIGKILL sent
}

// rankExit is a rank's end as its watcher saw it.
type rankExit struct {
	idx int
	st  *ExitStatus // from the shim's exit file; nil if it wrote none
	// shim is the shim's own end when it left no exit file ("" for an
	// adopted shim: its parent is gone, its status with it).
	shim    string
	code    int
	shimSig string
}

func (l *Launcher) newGang(rec *gangRecord, recovered bool) *gang {
	return &gang{
		l: l, key: rec.Spec.Key(), rec: rec, desired: recovered,
		stopReq: make(chan string, 1),
		done:    make(chan struct{}),
		exits:   make(chan rankExit, len(rec.Ranks)),
	}
}

// requestStop asks the gang to tear down; the first reason wins.
func (g *gang) requestStop(reason string) {
	select {
	case g.stopReq <- reason:
	default:
	}
}

// run starts a new gang and watches it.
func (g *gang) run() {
	defer g.l.wg.Done()
	for _, o := range g.after {
		select {
		case <-o.done:
		case r := <-g.stopReq:
			g.abandon("cancelled before start: " + r)
			return
		case <-g.l.stop:
			return
		}
	}
	if g.invalid != nil {
		g.abandon("launch error: " + g.invalid.Error())
		return
	}
	s := &g.rec.Spec
	genDir := g.l.paths(g.key, 0).genDir
	var hostfile, mpich string
	err := os.MkdirAll(genDir, 0o755)
	if err == nil {
		hostfile, mpich, err = writeHostfiles(genDir, s.Hosts)
	}
	if err != nil {
		g.abandon("launch error: " + err.Error())
		return
	}
	// All ranks start together, each from its own goroutine: starting a
	// shim waits for its exec, and on a many-core node the starts overlap.
	select {
	case r := <-g.stopReq:
		g.tearing = r
	default:
	}
	type started struct {
		cmd   *exec.Cmd
		err   error
		paths rankPaths
	}
	res := make([]started, len(s.Processes))
	if g.tearing == "" {
		var wg sync.WaitGroup
		for i, p := range s.Processes {
			paths := g.l.paths(g.key, p.Rank)
			paths.hostfile, paths.hostfileMPICH = hostfile, mpich
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd, err := g.l.startShim(s, p, paths)
				res[i] = started{cmd, err, paths}
			}()
		}
		wg.Wait()
		g.l.pool.refill()
	}
	for i, p := range s.Processes {
		r := res[i]
		switch {
		case g.tearing != "" && r.cmd == nil:
			g.finish(i, &ExitStatus{ExitCode: -1}, "not started: "+g.tearing)
			continue
		case r.err != nil:
			g.finish(i, &ExitStatus{ExitCode: 127, Error: r.err.Error()}, "launch error: "+r.err.Error())
			if g.tearing == "" {
				g.tearing = fmt.Sprintf("rank %d could not start", p.Rank)
			}
			continue
		}
		id, err := identify(r.cmd.Process.Pid)
		if err != nil { // already gone: its watcher reports how
			id = procIdentity{PID: r.cmd.Process.Pid}
		}
		g.l.mu.Lock()
		g.rec.Ranks[i].State = rankRunning
		g.rec.Ranks[i].Shim = id
		g.l.mu.Unlock()
		g.live++
		g.l.emit(g.key, p.Rank, api.RankStarted, nil, "")
		go g.waitChild(i, r.cmd, r.paths.exit)
	}
	g.l.save()
	if g.tearing != "" {
		g.l.mu.Lock()
		g.rec.Failure = g.tearing
		g.l.mu.Unlock()
		g.terminate()
	}
	g.loop()
}

// recover takes over a gang a previous agent started: it adopts the live
// ranks and records those that ended. New calls it before returning, so
// Running is right from the start; loop then watches the gang.
func (g *gang) recover(rebooted bool) {
	failed := ""
	for i, r := range g.rec.Ranks {
		paths := g.l.paths(g.key, r.Rank)
		switch r.State {
		case rankFinished:
			g.l.emit(g.key, r.Rank, api.RankExited, r.Exit, r.Reason)
			continue
		case rankPending:
			// Started as the agent stopped? The shim writes its pid file
			// before it starts the rank.
			if sp, ok := readShimPID(paths.pid); ok && sp.BootID == g.l.boot {
				r.Shim = sp.procIdentity
			}
		}
		// An exit file means the rank ended (its shim may be a moment from
		// exiting: what is left of its group goes).
		if st := readExit(paths.exit); st != nil && r.Shim.PID != 0 {
			if !rebooted && r.Shim.alive() {
				signalGroup(r.Shim.PID, syscall.SIGKILL)
			}
			g.finish(i, st, st.Reason())
			if st.ExitCode != 0 && failed == "" {
				failed = fmt.Sprintf("rank %d failed: %s", r.Rank, st.Reason())
			}
			continue
		}
		if !rebooted && r.Shim.alive() {
			g.l.mu.Lock()
			r.State = rankRunning
			g.l.mu.Unlock()
			g.live++
			g.l.emit(g.key, r.Rank, api.RankStarted, nil, "")
			go g.waitAdopted(i, r.Shim, paths.exit)
			continue
		}
		why := "lost: its process ended while the agent was down and left no exit status"
		switch {
		case rebooted:
			why = "lost: the node rebooted"
		case r.Shim.PID == 0:
			why = "lost: the agent stopped while starting it"
		}
		g.finish(i, &ExitStatus{ExitCode: -1}, why)
		if failed == "" {
			failed = fmt.Sprintf("rank %d %s", r.Rank, why)
		}
	}
	g.l.save()
	if g.rec.Failure != "" {
		g.tearing = g.rec.Failure // it was being torn down: finish the job
	} else if failed != "" {
		g.tearing = failed
		g.l.mu.Lock()
		g.rec.Failure = failed
		g.l.mu.Unlock()
	}
	if g.tearing != "" && g.live > 0 {
		g.terminate()
	}
}

// watch runs loop for a recovered gang.
func (g *gang) watch() {
	defer g.l.wg.Done()
	g.loop()
}

// loop collects exits until every rank has ended.
func (g *gang) loop() {
	var grace <-chan time.Time
	if g.tearing != "" && g.live > 0 {
		grace = time.After(g.l.cfg.GracePeriod)
	}
	for g.live > 0 {
		select {
		case e := <-g.exits:
			g.live--
			if g.onExit(e) && g.live > 0 {
				g.terminate()
				grace = time.After(g.l.cfg.GracePeriod)
			}
		case r := <-g.stopReq:
			if g.tearing == "" {
				g.tearing = r
				g.terminate()
				grace = time.After(g.l.cfg.GracePeriod)
			}
		case <-grace:
			g.kill()
		case <-g.l.stop:
			return // the ranks run on; the next agent adopts them
		}
	}
	g.end()
}

// onExit records an exit; it reports whether the gang must now be torn
// down (the first failure).
func (g *gang) onExit(e rankExit) bool {
	r := g.rec.Ranks[e.idx]
	st, reason := e.st, ""
	switch {
	case st != nil:
		reason = st.Reason()
	case e.shim != "":
		st = &ExitStatus{ExitCode: e.code, Signal: e.shimSig}
		reason = "the shim ended without an exit status: " + e.shim
	case g.killed:
		st = &ExitStatus{ExitCode: 128 + int(syscall.SIGKILL), Signal: "SIGKILL"}
		reason = "signal: SIGKILL"
	default:
		st = &ExitStatus{ExitCode: -1}
		reason = "lost: its process ended without an exit status"
	}
	failed := st.ExitCode != 0
	switch {
	case g.tearing != "" && g.killed && st.Signal == "SIGKILL":
		reason = "killed after the grace period: " + g.tearing
	case g.tearing != "":
		reason = "torn down: " + g.tearing + " (" + orOK(reason) + ")"
	}
	g.finish(e.idx, st, reason)
	if failed && g.tearing == "" {
		g.tearing = fmt.Sprintf("rank %d failed: %s", r.Rank, st.Reason())
		if st.Reason() == "" {
			g.tearing = fmt.Sprintf("rank %d failed: %s", r.Rank, reason)
		}
		g.l.mu.Lock()
		g.rec.Failure = g.tearing
		g.l.mu.Unlock()
		g.l.save()
		return true
	}
	return false
}

func orOK(s string) string {
	if s == "" {
		return "exit code 0"
	}
	return s
}

// finish reports a rank's end and records it. The report goes first: the
// agent counts a job with an exit not yet delivered as running in its
// heartbeats, so there is no moment when the rank is neither running nor
// reported (the server would declare it lost).
func (g *gang) finish(i int, st *ExitStatus, reason string) {
	r := g.rec.Ranks[i]
	g.l.emit(g.key, r.Rank, api.RankExited, st, reason)
	g.l.mu.Lock()
	r.State, r.Exit, r.Reason = rankFinished, st, reason
	g.l.mu.Unlock()
	g.l.save()
	if r.Shim.PID > 0 && g.l.cfg.Log != nil {
		g.l.cfg.Log.Info("rank ended", "job", g.key.Job, "generation", g.key.Generation, "rank", r.Rank, "exitCode", st.ExitCode, "reason", reason)
	}
}

// abandon ends a gang none of whose ranks started.
func (g *gang) abandon(reason string) {
	for i := range g.rec.Ranks {
		g.finish(i, &ExitStatus{ExitCode: 127}, reason)
	}
	g.end()
}

// terminate sends SIGTERM to the process group of every live rank.
func (g *gang) terminate() {
	g.signal(syscall.SIGTERM)
}

// kill sends SIGKILL to every live rank's group at the end of the grace
// period.
func (g *gang) kill() {
	g.killed = true
	g.signal(syscall.SIGKILL)
}

func (g *gang) signal(sig syscall.Signal) {
	g.l.mu.Lock()
	defer g.l.mu.Unlock()
	for _, r := range g.rec.Ranks {
		if r.State == rankRunning {
			if err := signalGroup(r.Shim.PID, sig); err != nil {
				g.l.cfg.Log.Warn("signal", "job", g.key.Job, "rank", r.Rank, "signal", sig, "err", err)
			}
		}
	}
}

// end marks the gang finished. Its record stays (see Config.Retain).
func (g *gang) end() {
	g.l.mu.Lock()
	g.finished = true
	if g.rec.Ended.IsZero() {
		g.rec.Ended = time.Now()
	}
	err := g.l.saveLocked(true)
	g.l.mu.Unlock()
	if err != nil {
		g.l.cfg.Log.Error("launcher state not saved", "err", err)
	}
	close(g.done)
}

// waitChild waits for a shim this agent started. It first waits without
// reaping, so that the shim's pid still names its process group while the
// group's leftovers (processes the rank left behind) get SIGKILL.
func (g *gang) waitChild(i int, cmd *exec.Cmd, exitFile string) {
	pid := cmd.Process.Pid
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	signalGroup(pid, syscall.SIGKILL)
	err := cmd.Wait()
	e := rankExit{idx: i, st: readExit(exitFile)}
	if e.st == nil {
		e.shim, e.code, e.shimSig = describeWait(err)
	}
	g.exits <- e
}

// waitAdopted waits for a shim a previous agent started.
func (g *gang) waitAdopted(i int, id procIdentity, exitFile string) {
	if !waitExit(id, g.l.stop) {
		return
	}
	signalGroup(id.PID, syscall.SIGKILL)
	g.exits <- rankExit{idx: i, st: readExit(exitFile)}
}

// describeWait says how a shim ended: in words, its exit code, its signal.
func describeWait(err error) (string, int, string) {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ws := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			sig := signalName(ws.Signal())
			return "signal: " + sig, 128 + int(ws.Signal()), sig
		}
		return fmt.Sprintf("exit code %d", ws.ExitStatus()), ws.ExitStatus(), ""
	}
	if err != nil {
		return err.Error(), -1, ""
	}
	return "exit code 0", 0, ""
}
