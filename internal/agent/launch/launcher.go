package launch

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"gpucloud/internal/api"
)

// Config sets up a Launcher.
type Config struct {
	// DataDir holds the state file, and per job the ranks' logs, exit
	// files and working directories.
	DataDir string
	// CheckpointRoot holds GPUCLOUD_CHECKPOINT_DIR of each job (ROOT/JOB),
	// kept across restarts. Point it at a shared filesystem for jobs whose
	// restarts may land on other nodes. Default DataDir/checkpoints.
	CheckpointRoot string
	NodeName       string
	// Shim is the command that runs RunShim: the agent binary and its
	// arguments ([/usr/bin/gpucloud agent shim]).
	Shim []string
	// GracePeriod is the time between SIGTERM and SIGKILL (default 30s).
	GracePeriod time.Duration
	// LogMaxMB and LogMaxFiles rotate each rank's log (defaults 100, 5).
	LogMaxMB, LogMaxFiles int
	// NodeEnv are this node's settings for every rank: NCCL_TOPO_FILE,
	// NCCL_IB_HCA, GLOO_SOCKET_IFNAME ... The job's env overrides them.
	NodeEnv map[string]string
	// BaseEnv is the environment ranks start from (default: the agent's,
	// without its GPUCLOUD_ variables).
	BaseEnv []string
	// OnEvent receives every rank start and exit. It must not block for
	// long. Exits of finished gangs are sent again after an agent restart
	// (the control plane treats them as idempotent).
	OnEvent func(api.RankEvent)
	// Retain is how long the record of an ended gang is kept after the
	// control plane stops assigning it (default one hour): while it is
	// kept, the generation is never started again, even if a lagging
	// replica assigns it once more.
	Retain time.Duration
	// Prestart is the number of idle shims kept ready once the node has
	// run a gang (0: none), so that launching a rank does not wait for a
	// shim to start: one per GPU covers a per-GPU gang.
	Prestart int
	Log      *slog.Logger
}

// Launcher runs the gangs of one node.
type Launcher struct {
	cfg  Config
	boot string

	mu    sync.Mutex
	gangs map[Key]*gang
	order []Key // record order, for a stable state file

	pool *pool // nil without Prestart

	stop chan struct{} // Close
	wg   sync.WaitGroup
}

// New starts a launcher on cfg.DataDir and adopts the ranks a previous
// agent left running there: ranks still alive are watched again, ranks
// that ended meanwhile are reported with their exit status, ranks gone
// without one are reported lost (and their gangs torn down).
func New(cfg Config) (*Launcher, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("launch: no data directory")
	}
	if len(cfg.Shim) == 0 {
		return nil, errors.New("launch: no shim command")
	}
	if cfg.CheckpointRoot == "" {
		cfg.CheckpointRoot = filepath.Join(cfg.DataDir, "checkpoints")
	}
	if cfg.GracePeriod <= 0 {
		cfg.GracePeriod = 30 * time.Second
	}
	if cfg.LogMaxMB <= 0 {
		cfg.LogMaxMB = 100
	}
	if cfg.LogMaxFiles <= 0 {
		cfg.LogMaxFiles = 5
	}
	if cfg.BaseEnv == nil {
		cfg.BaseEnv = os.Environ()
	}
	if cfg.Retain <= 0 {
		cfg.Retain = time.Hour
	}
	if cfg.OnEvent == nil {
		cfg.OnEvent = func(api.RankEvent) {}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	l := &Launcher{cfg: cfg, boot: bootID(), gangs: map[Key]*gang{}, stop: make(chan struct{})}
	st, err := loadState(l.statePath())
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	rebooted := st.BootID != "" && st.BootID != l.boot
	for _, rec := range st.Gangs {
		g := l.newGang(rec, true)
		l.gangs[rec.Spec.Key()] = g
		l.order = append(l.order, rec.Spec.Key())
	}
	for _, k := range slices.Clone(l.order) {
		g := l.gangs[k]
		g.recover(rebooted)
		l.wg.Add(1)
		go g.watch()
	}
	l.mu.Lock()
	err = l.saveLocked(true)
	l.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if cfg.Prestart > 0 {
		l.pool = newPool(l, cfg.Prestart)
	}
	return l, nil
}

func (l *Launcher) statePath() string { return filepath.Join(l.cfg.DataDir, "state.json") }

// Close stops watching without touching the ranks: they keep running and
// the next Launcher on the same directory adopts them.
func (l *Launcher) Close() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.pool.close()
	l.wg.Wait()
}

// Sync makes the node run exactly these job generations, as the control
// plane's assignment stream says (level-triggered): it starts the ones it
// has never started, tears down those no longer assigned (an older
// generation before its successor starts), and forgets ended ones no
// longer assigned once Config.Retain has passed. A generation it started
// is never started again while its record is kept. Specs it cannot start
// are reported as failed ranks and returned as an error.
func (l *Launcher) Sync(specs []Spec) error {
	desired := map[Key]bool{}
	newest := map[string]int{}
	for _, s := range specs {
		desired[s.Key()] = true
		if g, ok := newest[s.Job]; !ok || s.Generation > g {
			newest[s.Job] = s.Generation
		}
	}
	var errs []error
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range slices.Clone(l.order) {
		g := l.gangs[k]
		g.desired = desired[k]
		if g.desired {
			continue
		}
		if g.finished {
			if time.Since(g.rec.Ended) > l.cfg.Retain {
				l.forgetLocked(k)
			}
			continue
		}
		reason := "unassigned by the control plane"
		if n, ok := newest[k.Job]; ok && n > k.Generation {
			reason = fmt.Sprintf("superseded by generation %d", n)
		}
		g.requestStop(reason)
	}
	for i := range specs {
		s := specs[i]
		k := s.Key()
		if _, ok := l.gangs[k]; ok {
			continue // never twice
		}
		rec := &gangRecord{Spec: s}
		for _, p := range s.Processes {
			rec.Ranks = append(rec.Ranks, &rankRecord{Rank: p.Rank, State: rankPending})
		}
		g := l.newGang(rec, false)
		g.desired = true
		if err := s.validate(); err != nil {
			errs = append(errs, err)
			g.invalid = err
		}
		// Ranks of other generations of the job must be gone first: they
		// hold the GPUs and the rendezvous port.
		for _, ok := range l.order {
			if o := l.gangs[ok]; ok.Job == s.Job && !o.finished {
				g.after = append(g.after, o)
			}
		}
		l.gangs[k] = g
		l.order = append(l.order, k)
		l.wg.Add(1)
		go g.run()
	}
	if err := l.saveLocked(false); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// StopAll tears every gang down and waits until their ranks are gone (the
// agent's drain).
func (l *Launcher) StopAll(reason string) {
	l.mu.Lock()
	var gs []*gang
	for _, k := range l.order {
		g := l.gangs[k]
		g.requestStop(reason)
		gs = append(gs, g)
	}
	l.mu.Unlock()
	for _, g := range gs {
		select {
		case <-g.done:
		case <-l.stop:
			return
		}
	}
}

// Keys lists the gangs the launcher knows (running or retained), in the
// order they were started.
func (l *Launcher) Keys() []Key {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.order)
}

// Running lists the job generations with live ranks, for heartbeats.
func (l *Launcher) Running() []api.RunningJob {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []api.RunningJob
	for _, k := range l.order {
		g := l.gangs[k]
		var ranks []int
		for _, r := range g.rec.Ranks {
			if r.State == rankRunning {
				ranks = append(ranks, r.Rank)
			}
		}
		if len(ranks) > 0 {
			out = append(out, api.RunningJob{Job: k.Job, Generation: k.Generation, Ranks: ranks})
		}
	}
	return out
}

// Wait blocks until the gang has ended (every rank finished) or timeout.
func (l *Launcher) Wait(k Key, timeout time.Duration) bool {
	l.mu.Lock()
	g, ok := l.gangs[k]
	l.mu.Unlock()
	if !ok {
		return false
	}
	select {
	case <-g.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// RankStatus is one rank as the launcher knows it.
type RankStatus struct {
	Rank   int
	State  string // pending, running, finished
	PID    int    // the shim's pid: it leads the rank's process group
	Exit   *ExitStatus
	Reason string
}

// Status lists the ranks of a gang the launcher knows.
func (l *Launcher) Status(k Key) ([]RankStatus, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, ok := l.gangs[k]
	if !ok {
		return nil, false
	}
	out := make([]RankStatus, 0, len(g.rec.Ranks))
	for _, r := range g.rec.Ranks {
		rs := RankStatus{Rank: r.Rank, State: r.State, PID: r.Shim.PID, Reason: r.Reason}
		if r.Exit != nil {
			e := *r.Exit
			rs.Exit = &e
		}
		out = append(out, rs)
	}
	return out, true
}

// LogPath is the current log file of a rank (older output is in rotated
// files beside it).
func (l *Launcher) LogPath(k Key, rank int) string { return l.paths(k, rank).log }

func (l *Launcher) forgetLocked(k Key) {
	delete(l.gangs, k)
	l.order = slices.DeleteFunc(l.order, func(o Key) bool { return o == k })
}

// saveLocked writes the state file. Sync records a gang before starting it
// without an fsync, to keep the disk off the launch path: the record
// survives an agent crash in the page cache, which is what prevents a double
// start; the gang's goroutine saves durably once its ranks run.
func (l *Launcher) saveLocked(durable bool) error {
	st := stateFile{Version: stateVersion, BootID: l.boot}
	for _, k := range l.order {
		st.Gangs = append(st.Gangs, l.gangs[k].rec)
	}
	b, err := json.MarshalIndent(st, "", " ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(l.statePath(), b, durable); err != nil {
		return fmt.Errorf("launch: saving state: %w", err)
	}
	return nil
}

// save writes the state file; a failure is logged (the ranks run on).
func (l *Launcher) save() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.saveLocked(true); err != nil {
		l.cfg.Log.Error("launcher state not saved", "err", err)
	}
}

// rankPaths are the files of one rank.
type rankPaths struct {
	genDir, dir, work       string
	log, exit, pid          string
	checkpoint              string
	hostfile, hostfileMPICH string
}

func (l *Launcher) paths(k Key, rank int) rankPaths {
	job := filepath.Join(l.cfg.DataDir, "jobs", k.Job)
	gen := filepath.Join(job, "gen-"+strconv.Itoa(k.Generation))
	dir := filepath.Join(gen, "rank-"+strconv.Itoa(rank))
	return rankPaths{
		genDir:     gen,
		dir:        dir,
		work:       filepath.Join(job, "work", "rank-"+strconv.Itoa(rank)),
		log:        filepath.Join(dir, "output.log"),
		exit:       filepath.Join(dir, "exit.json"),
		pid:        filepath.Join(dir, "shim.json"),
		checkpoint: filepath.Join(l.cfg.CheckpointRoot, k.Job),
	}
}

func (l *Launcher) emit(k Key, rank int, event string, st *ExitStatus, reason string) {
	e := api.RankEvent{Job: k.Job, Generation: k.Generation, Rank: rank, Event: event, Time: time.Now()}
	if st != nil {
		e.ExitCode = st.ExitCode
	}
	e.Reason = reason
	l.cfg.OnEvent(e)
}

// readExit reads a rank's exit file, if its shim wrote one.
func readExit(path string) *ExitStatus {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var st ExitStatus
	if json.Unmarshal(b, &st) != nil {
		return nil
	}
	return &st
}

// readShimPID reads the pid file a shim writes before it starts its rank.
func readShimPID(path string) (shimPID, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return shimPID{}, false
	}
	var p shimPID
	if json.Unmarshal(b, &p) != nil {
		return shimPID{}, false
	}
	return p, true
}

// startShim starts one rank: it hands the rank's spec to an idle shim of
// the pool, or to a shim started now.
func (l *Launcher) startShim(s *Spec, p api.Process, paths rankPaths) (*exec.Cmd, error) {
	for _, d := range []string{paths.dir, paths.checkpoint} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// The rank's own directory, or the job's workingDir (a relative one
	// is taken from the rank's own directory: the agent's is nobody's
	// business).
	dir := paths.work
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if s.WorkingDir != "" {
		dir = s.WorkingDir
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(paths.work, dir)
		}
	}
	os.Remove(paths.exit)
	os.Remove(paths.pid)
	spec, err := json.Marshal(ShimSpec{
		Argv: s.Command, Env: rankEnv(l.cfg.BaseEnv, l.cfg.NodeEnv, s, p, paths, l.cfg.NodeName), Dir: dir,
		ExitFile: paths.exit, PIDFile: paths.pid, Log: paths.log, LogMaxMB: l.cfg.LogMaxMB, LogMaxFiles: l.cfg.LogMaxFiles,
	})
	if err != nil {
		return nil, err
	}
	sh := l.pool.take()
	if sh != nil {
		herr := sh.hand(spec)
		if herr == nil {
			return sh.cmd, nil
		}
		// The idle shim died (EPIPE): start another.
		l.cfg.Log.Warn("an idle shim is gone; starting another", "pid", sh.cmd.Process.Pid, "err", herr)
		go sh.cmd.Wait()
	}
	if sh, err = l.spawnShim(); err != nil {
		return nil, err
	}
	if err := sh.hand(spec); err != nil {
		go sh.cmd.Wait()
		return nil, fmt.Errorf("handing the rank to its shim: %w", err)
	}
	return sh.cmd, nil
}
