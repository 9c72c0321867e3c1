package launch

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gpucloud/internal/api"
)

// The test binary is also the shim: the launcher runs os.Args[0] with
// GPUCLOUD_RANK_SHIM=1, as the agent runs `gpucloud agent shim`.
func TestMain(m *testing.M) {
	if os.Getenv(ShimEnv) == "1" {
		os.Exit(RunShim(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// recorder collects rank events.
type recorder struct {
	mu     sync.Mutex
	events []api.RankEvent
}

func (r *recorder) add(e api.RankEvent) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) all() []api.RankEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// find returns the events of a kind for a job generation, by rank.
func (r *recorder) find(job string, gen int, kind string) map[int][]api.RankEvent {
	out := map[int][]api.RankEvent{}
	for _, e := range r.all() {
		if e.Job == job && e.Generation == gen && e.Event == kind {
			out[e.Rank] = append(out[e.Rank], e)
		}
	}
	return out
}

func newLauncher(t *testing.T, dir string, rec *recorder, tweak ...func(*Config)) *Launcher {
	t.Helper()
	cfg := Config{
		DataDir:     dir,
		NodeName:    "node-a",
		Shim:        []string{os.Args[0]},
		GracePeriod: 10 * time.Second, // SIGTERM is enough; a loaded CI machine may be slow
		NodeEnv:     map[string]string{"NCCL_TOPO_FILE": "/etc/nccl/topo.xml", "NCCL_IB_HCA": "=mlx5_0,mlx5_1"},
		BaseEnv:     []string{"PATH=" + os.Getenv("PATH"), "HOME=/root", "GPUCLOUD_TOKEN=secret"},
		OnEvent:     rec.add,
	}
	for _, f := range tweak {
		f(&cfg)
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

// spec is a gang of len(cmds) ranks on this node, rank i running sh -c
// cmds[i] on GPU i.
func spec(job string, gen int, cmds ...string) Spec {
	s := Spec{Assignment: api.Assignment{
		Job: job, Tenant: "t", Generation: gen, Launch: api.LaunchPerGPU,
		WorldSize: len(cmds) + 2, NodeRank: 1, Nodes: 2, FirstRank: 2,
		Command:    []string{"sh", "-c", `eval "$RANK_CMD"`},
		MasterAddr: "10.0.0.1", MasterPort: 29500,
		Env: map[string]string{"NCCL_IB_HCA": "=mlx5_0", "USER_VAR": "x"},
	}, Hosts: []Host{{"10.0.0.1", len(cmds)}, {"10.0.0.2", len(cmds)}}}
	for i, c := range cmds {
		s.Processes = append(s.Processes, api.Process{Rank: 2 + i, LocalRank: i, GPUs: []int{i}})
		s.Env["RANK_CMD_"+strconv.Itoa(2+i)] = c
	}
	// Each rank runs its own command: sh picks it by RANK.
	s.Command = []string{"sh", "-c", `eval "$(printenv RANK_CMD_$RANK)"`}
	return s
}

func waitGang(t *testing.T, l *Launcher, k Key) []RankStatus {
	t.Helper()
	if !l.Wait(k, 20*time.Second) {
		st, _ := l.Status(k)
		t.Fatalf("gang %v did not end: %+v", k, st)
	}
	st, _ := l.Status(k)
	return st
}

func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	return env
}

func TestGangEnvironmentAndSuccess(t *testing.T) {
	dir := t.TempDir()
	rec := &recorder{}
	l := newLauncher(t, dir, rec)
	// Each rank records its environment, its process group and its
	// working directory, and prints a line.
	script := `env > env.txt; cut -d' ' -f5 /proc/$$/stat > pgid.txt; pwd > pwd.txt; echo "hello from rank $RANK"; echo "to stderr" >&2`
	s := spec("job-1", 0, script, script)
	if err := l.Sync([]Spec{s}); err != nil {
		t.Fatal(err)
	}
	st := waitGang(t, l, s.Key())
	pgids := map[string]bool{}
	for i, r := range st {
		if r.State != rankFinished || r.Exit == nil || r.Exit.ExitCode != 0 || r.Reason != "" {
			t.Errorf("rank %d: %+v", r.Rank, r)
		}
		work := filepath.Join(dir, "jobs", "job-1", "work", "rank-"+strconv.Itoa(r.Rank))
		env := readEnvFile(t, filepath.Join(work, "env.txt"))
		want := map[string]string{
			"RANK": strconv.Itoa(2 + i), "LOCAL_RANK": strconv.Itoa(i), "WORLD_SIZE": "4", "NODE_RANK": "1",
			"LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500",
			"CUDA_VISIBLE_DEVICES": strconv.Itoa(i), "GPUCLOUD_JOB_ID": "job-1",
			"GPUCLOUD_CHECKPOINT_DIR": filepath.Join(dir, "checkpoints", "job-1"),
			"GPUCLOUD_HOSTFILE":       filepath.Join(dir, "jobs", "job-1", "gen-0", "hostfile"),
			"GPUCLOUD_HOSTFILE_MPICH": filepath.Join(dir, "jobs", "job-1", "gen-0", "hostfile.mpich"),
			"GPUCLOUD_RESTART_COUNT":  "0", "TORCHELASTIC_RESTART_COUNT": "0", "GPUCLOUD_NODE_NAME": "node-a",
			"NCCL_TOPO_FILE": "/etc/nccl/topo.xml",
			"NCCL_IB_HCA":    "=mlx5_0", // the job's env overrides the node's
			"USER_VAR":       "x", "HOME": "/root",
		}
		for k, v := range want {
			if env[k] != v {
				t.Errorf("rank %d: %s=%q, want %q", r.Rank, k, env[k], v)
			}
		}
		for _, k := range []string{ShimEnv, "GPUCLOUD_TOKEN"} {
			if _, ok := env[k]; ok {
				t.Errorf("rank %d inherited %s", r.Rank, k)
			}
		}
		if b, _ := os.ReadFile(filepath.Join(work, "pwd.txt")); strings.TrimSpace(string(b)) != work {
			t.Errorf("rank %d ran in %q, want %q", r.Rank, b, work)
		}
		b, _ := os.ReadFile(filepath.Join(work, "pgid.txt"))
		pgid := strings.TrimSpace(string(b))
		if pgid != strconv.Itoa(r.PID) || pgid == strconv.Itoa(syscall.Getpgrp()) {
			t.Errorf("rank %d in process group %s, want its shim's %d (not the agent's %d)", r.Rank, pgid, r.PID, syscall.Getpgrp())
		}
		pgids[pgid] = true
		log, _ := os.ReadFile(l.LogPath(s.Key(), r.Rank))
		if !strings.Contains(string(log), fmt.Sprintf("hello from rank %d\n", r.Rank)) || !strings.Contains(string(log), "to stderr\n") {
			t.Errorf("rank %d log %q", r.Rank, log)
		}
	}
	if len(pgids) != 2 {
		t.Errorf("ranks share a process group: %v", pgids)
	}
	host, _ := os.ReadFile(filepath.Join(dir, "jobs", "job-1", "gen-0", "hostfile"))
	if string(host) != "10.0.0.1 slots=2\n10.0.0.2 slots=2\n" {
		t.Errorf("hostfile %q", host)
	}
	mpich, _ := os.ReadFile(filepath.Join(dir, "jobs", "job-1", "gen-0", "hostfile.mpich"))
	if string(mpich) != "10.0.0.1:2\n10.0.0.2:2\n" {
		t.Errorf("MPICH hostfile %q", mpich)
	}
	started, exited := rec.find("job-1", 0, api.RankStarted), rec.find("job-1", 0, api.RankExited)
	for _, r := range []int{2, 3} {
		if len(started[r]) != 1 || len(exited[r]) != 1 || exited[r][0].ExitCode != 0 {
			t.Errorf("rank %d events: started %v exited %v", r, started[r], exited[r])
		}
	}
	if run := l.Running(); len(run) != 0 {
		t.Errorf("running after the end: %v", run)
	}
}

// groupGone waits until no live process is left in the group led by pid.
// Zombies count as gone: the processes are dead, and reaping orphans is
// init's business (slow in some containers).
func groupGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		live := liveInGroup(pid)
		if len(live) == 0 {
			return
		}
		if time.Now().After(deadline) {
			syscall.Kill(-pid, syscall.SIGKILL)
			t.Fatalf("process group %d outlived its gang: %v", pid, live)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// liveInGroup lists the processes of group pgid that are not zombies.
func liveInGroup(pgid int) []string {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []string
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			out = append(out, string(b[:i+1]))
		}
	}
	return out
}

func TestPrestartedShims(t *testing.T) {
	rec := &recorder{}
	l := newLauncher(t, t.TempDir(), rec, func(c *Config) { c.Prestart = 3 })
	if l.pool.idle != nil {
		t.Fatal("idle shims before the node ran anything")
	}
	first := spec("job-first", 0, "true")
	l.Sync([]Spec{first})
	waitGang(t, l, first.Key())
	l.pool.waitFull()
	l.pool.mu.Lock()
	idle := slices.Clone(l.pool.idle)
	l.pool.mu.Unlock()
	if len(idle) != 3 {
		t.Fatalf("%d idle shims, want 3", len(idle))
	}
	s := spec("job-p", 0, "echo rank $RANK in $PWD", "echo rank $RANK in $PWD")
	if err := l.Sync([]Spec{first, s}); err != nil {
		t.Fatal(err)
	}
	st := waitGang(t, l, s.Key())
	used := 0
	for _, r := range st {
		for _, sh := range idle {
			if sh.cmd.Process.Pid == r.PID {
				used++
			}
		}
		log, _ := os.ReadFile(l.LogPath(s.Key(), r.Rank))
		want := fmt.Sprintf("rank %d in %s\n", r.Rank, filepath.Join(l.cfg.DataDir, "jobs", "job-p", "work", "rank-"+strconv.Itoa(r.Rank)))
		if r.Exit.ExitCode != 0 || string(log) != want {
			t.Errorf("rank %d: %+v log %q, want %q", r.Rank, r, log, want)
		}
	}
	if used != 2 {
		t.Errorf("%d ranks ran on prestarted shims, want 2", used)
	}
	l.pool.waitFull()
	l.pool.mu.Lock()
	idle = slices.Clone(l.pool.idle)
	l.pool.mu.Unlock()
	// An idle node lets its shims go.
	l.pool.release()
	for _, sh := range idle {
		groupGone(t, sh.cmd.Process.Pid)
	}
	l.pool.refill()
	l.pool.waitFull()
	l.pool.mu.Lock()
	idle = slices.Clone(l.pool.idle)
	l.pool.mu.Unlock()
	l.Close()
	// Idle shims leave with the launcher.
	for _, sh := range idle {
		groupGone(t, sh.cmd.Process.Pid)
	}
}

func TestFailedRankTearsDownTheGang(t *testing.T) {
	rec := &recorder{}
	l := newLauncher(t, t.TempDir(), rec)
	s := spec("job-f", 3, "sleep 60", "sleep 0.3; echo failing; exit 3", "sleep 60 & wait")
	start := time.Now()
	if err := l.Sync([]Spec{s}); err != nil {
		t.Fatal(err)
	}
	st := waitGang(t, l, s.Key())
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("teardown took %v", d)
	}
	if r := st[1]; r.Exit.ExitCode != 3 || r.Reason != "exit code 3" {
		t.Errorf("failed rank: %+v", r)
	}
	for _, i := range []int{0, 2} {
		r := st[i]
		if r.Exit.ExitCode != 143 || r.Reason != "torn down: rank 3 failed: exit code 3 (signal: SIGTERM)" {
			t.Errorf("rank %d: exit %d reason %q", r.Rank, r.Exit.ExitCode, r.Reason)
		}
	}
	for _, r := range st {
		groupGone(t, r.PID)
	}
	if got := rec.find("job-f", 3, api.RankExited); len(got) != 3 {
		t.Errorf("exit events %v", got)
	}
}

func TestGracePeriodThenSIGKILL(t *testing.T) {
	rec := &recorder{}
	l := newLauncher(t, t.TempDir(), rec, func(c *Config) { c.GracePeriod = 500 * time.Millisecond })
	// The rank ignores SIGTERM (and so do its children).
	s := spec("job-g", 0, `trap "" TERM; echo ready; while :; do sleep 0.05; done`)
	if err := l.Sync([]Spec{s}); err != nil {
		t.Fatal(err)
	}
	waitLog(t, l.LogPath(s.Key(), 2), "ready")
	start := time.Now()
	if err := l.Sync(nil); err != nil { // cancelled
		t.Fatal(err)
	}
	if !l.Wait(s.Key(), 10*time.Second) {
		t.Fatal("not killed")
	}
	if d := time.Since(start); d < 450*time.Millisecond || d > 5*time.Second {
		t.Errorf("killed after %v, want the 500ms grace period", d)
	}
	ex := rec.find("job-g", 0, api.RankExited)[2]
	if len(ex) != 1 || ex[0].ExitCode != 137 || ex[0].Reason != "killed after the grace period: unassigned by the control plane" {
		t.Errorf("exit events %+v", ex)
	}
	// Ended and no longer assigned: kept for Retain, never started again.
	if err := l.Sync([]Spec{s}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := len(rec.find("job-g", 0, api.RankStarted)[2]); n != 1 {
		t.Errorf("started %d times", n)
	}
}

func waitLog(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q never appeared in %q", path, want, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCancelRightAfterStart(t *testing.T) {
	rec := &recorder{}
	l := newLauncher(t, t.TempDir(), rec)
	s := spec("job-c", 1, "sleep 60", "sleep 60", "sleep 60", "sleep 60")
	if err := l.Sync([]Spec{s}); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(nil); err != nil {
		t.Fatal(err)
	}
	if !l.Wait(s.Key(), 10*time.Second) {
		t.Fatal("cancel did not end the gang")
	}
	exited := rec.find("job-c", 1, api.RankExited)
	if len(exited) != 4 {
		t.Fatalf("exits %v", exited)
	}
	for _, e := range rec.all() {
		if e.Event == api.RankExited && !strings.Contains(e.Reason, "unassigned by the control plane") {
			t.Errorf("rank %d: reason %q", e.Rank, e.Reason)
		}
	}
}

func TestEndedGangsAreForgottenAfterRetain(t *testing.T) {
	rec := &recorder{}
	l := newLauncher(t, t.TempDir(), rec, func(c *Config) { c.Retain = 200 * time.Millisecond })
	s := spec("job-t", 0, "true")
	l.Sync([]Spec{s})
	waitGang(t, l, s.Key())
	l.Sync(nil)
	if _, ok := l.Status(s.Key()); !ok {
		t.Fatal("forgotten at once")
	}
	time.Sleep(300 * time.Millisecond)
	l.Sync(nil)
	if _, ok := l.Status(s.Key()); ok {
		t.Error("kept after Retain")
	}
	st, _ := readStateFile(t, l)
	if len(st.Gangs) != 0 {
		t.Errorf("state keeps %d gangs", len(st.Gangs))
	}
}

func readStateFile(t *testing.T, l *Launcher) (*stateFile, error) {
	t.Helper()
	st, err := loadState(l.statePath())
	if err != nil {
		t.Fatal(err)
	}
	return st, nil
}

func TestNeverStartsAGenerationTwice(t *testing.T) {
	rec := &recorder{}
	dir := t.TempDir()
	l := newLauncher(t, dir, rec)
	s := spec("job-d", 0, "echo run >> ../../runs.txt")
	for range 3 {
		if err := l.Sync([]Spec{s}); err != nil {
			t.Fatal(err)
		}
	}
	waitGang(t, l, s.Key())
	// Still assigned after it ended (the control plane has not seen the
	// exit yet): not started again, even by a new agent.
	l.Sync([]Spec{s})
	l.Close()
	l2 := newLauncher(t, dir, rec)
	l2.Sync([]Spec{s})
	time.Sleep(200 * time.Millisecond)
	b, _ := os.ReadFile(filepath.Join(dir, "jobs", "job-d", "runs.txt"))
	if string(b) != "run\n" {
		t.Errorf("ran %q, want once", b)
	}
	if n := len(rec.find("job-d", 0, api.RankStarted)[2]); n != 1 {
		t.Errorf("%d start events, want 1", n)
	}
	// The restarted agent reports the exit again (idempotent for the
	// server), so a report lost in the crash is not lost for good.
	if n := len(rec.find("job-d", 0, api.RankExited)[2]); n != 2 {
		t.Errorf("%d exit events, want 2 (one per agent)", n)
	}
}

func TestNewGenerationWaitsForTheOld(t *testing.T) {
	rec := &recorder{}
	dir := t.TempDir()
	l := newLauncher(t, dir, rec)
	ckpt := `echo "gen $GPUCLOUD_RESTART_COUNT" >> "$GPUCLOUD_CHECKPOINT_DIR/log"; `
	g1 := spec("job-n", 1, ckpt+"trap 'sleep 0.3; exit 0' TERM; sleep 60 & wait")
	if err := l.Sync([]Spec{g1}); err != nil {
		t.Fatal(err)
	}
	waitLog(t, filepath.Join(dir, "checkpoints", "job-n", "log"), "gen 0")
	g2 := spec("job-n", 2, ckpt+"echo done")
	if err := l.Sync([]Spec{g2}); err != nil {
		t.Fatal(err)
	}
	waitGang(t, l, g2.Key())
	old := rec.find("job-n", 1, api.RankExited)[2]
	started := rec.find("job-n", 2, api.RankStarted)[2]
	if len(old) != 1 || len(started) != 1 || started[0].Time.Before(old[0].Time) {
		t.Fatalf("generation 2 started %v, generation 1 ended %v", started, old)
	}
	if !strings.Contains(old[0].Reason, "superseded by generation 2") {
		t.Errorf("old generation reason %q", old[0].Reason)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "checkpoints", "job-n", "log"))
	if string(b) != "gen 0\ngen 1\n" { // restart counts of generations 1 and 2
		t.Errorf("checkpoint dir not kept across generations: %q", b)
	}
}

func TestAgentRestartAdoptsRunningRanks(t *testing.T) {
	rec := &recorder{}
	dir := t.TempDir()
	l := newLauncher(t, dir, rec)
	gate := func(name string) string {
		return "while [ ! -e " + filepath.Join(dir, name) + " ]; do sleep 0.02; done"
	}
	s := spec("job-r", 0, "echo up; "+gate("a")+"; echo bye; exit 0", "echo up; "+gate("b")+"; exit 4")
	if err := l.Sync([]Spec{s}); err != nil {
		t.Fatal(err)
	}
	waitLog(t, l.LogPath(s.Key(), 2), "up")
	waitLog(t, l.LogPath(s.Key(), 3), "up")
	before, _ := l.Status(s.Key())
	l.Close() // the agent goes away; the ranks run on

	rec2 := &recorder{}
	l2 := newLauncher(t, dir, rec2)
	if run := l2.Running(); len(run) != 1 || !slices.Equal(run[0].Ranks, []int{2, 3}) {
		t.Errorf("after restart running %v, want both ranks", run)
	}
	if n := len(rec2.find("job-r", 0, api.RankStarted)); n != 2 {
		t.Errorf("restarted agent reported %d running ranks, want 2", n)
	}
	os.WriteFile(filepath.Join(dir, "a"), nil, 0o644)
	deadline := time.Now().Add(10 * time.Second)
	for len(rec2.find("job-r", 0, api.RankExited)[2]) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("rank 2 end not seen by the new agent")
		}
		time.Sleep(10 * time.Millisecond)
	}
	os.WriteFile(filepath.Join(dir, "b"), nil, 0o644)
	st := waitGang(t, l2, s.Key())
	for i, r := range st {
		if r.PID != before[i].PID {
			t.Errorf("rank %d: pid %d, was %d (started again?)", r.Rank, r.PID, before[i].PID)
		}
	}
	if st[0].Exit.ExitCode != 0 || st[1].Exit.ExitCode != 4 || st[1].Reason != "exit code 4" {
		t.Errorf("adopted ranks ended %+v %+v", st[0], st[1])
	}
	log, _ := os.ReadFile(l2.LogPath(s.Key(), 2))
	if !strings.Contains(string(log), "bye") {
		t.Errorf("log after restart %q", log)
	}
}

func TestAgentRestartReportsLostRanksAndTearsDown(t *testing.T) {
	rec := &recorder{}
	dir := t.TempDir()
	l := newLauncher(t, dir, rec)
	s := spec("job-l", 0, "sleep 60", "sleep 60")
	if err := l.Sync([]Spec{s}); err != nil {
		t.Fatal(err)
	}
	st, _ := l.Status(s.Key())
	for st[0].PID == 0 || st[1].PID == 0 {
		time.Sleep(10 * time.Millisecond)
		st, _ = l.Status(s.Key())
	}
	l.Close()
	// While the agent is down, rank 2 and its shim are killed outright:
	// no exit status is written.
	syscall.Kill(-st[0].PID, syscall.SIGKILL)
	groupGone(t, st[0].PID)

	rec2 := &recorder{}
	l2 := newLauncher(t, dir, rec2)
	got := waitGang(t, l2, s.Key())
	if got[0].Exit.ExitCode != -1 || !strings.HasPrefix(got[0].Reason, "lost: ") {
		t.Errorf("killed rank: %+v", got[0])
	}
	if !strings.HasPrefix(got[1].Reason, "torn down: rank 2 lost: ") {
		t.Errorf("surviving rank: %q", got[1].Reason)
	}
	groupGone(t, st[1].PID)
}

func TestAgentRestartThenUnassignedLeavesNoOrphan(t *testing.T) {
	rec := &recorder{}
	dir := t.TempDir()
	l := newLauncher(t, dir, rec)
	s := spec("job-o", 0, "sleep 60", "sleep 60 & sleep 60 & wait")
	l.Sync([]Spec{s})
	waitRunning(t, l, s.Key())
	st, _ := l.Status(s.Key())
	l.Close()
	l2 := newLauncher(t, dir, rec)
	// The control plane no longer assigns the job (cancelled while the
	// agent was down).
	if err := l2.Sync(nil); err != nil {
		t.Fatal(err)
	}
	if !l2.Wait(s.Key(), 10*time.Second) {
		if _, ok := l2.Status(s.Key()); ok {
			t.Fatal("adopted gang not torn down")
		}
	}
	for _, r := range st {
		groupGone(t, r.PID)
	}
}

func waitRunning(t *testing.T, l *Launcher, k Key) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := l.Status(k)
		n := 0
		for _, r := range st {
			if r.State == rankRunning {
				n++
			}
		}
		if n == len(st) && n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ranks not running: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAgentRestartAfterRanksEnded(t *testing.T) {
	rec := &recorder{}
	dir := t.TempDir()
	l := newLauncher(t, dir, rec)
	gate := filepath.Join(dir, "gate")
	wait := "while [ ! -e " + gate + " ]; do sleep 0.02; done; exit 0"
	s := spec("job-e", 0, wait, wait)
	l.Sync([]Spec{s})
	waitRunning(t, l, s.Key())
	l.Close()
	// They end while no agent watches.
	os.WriteFile(gate, nil, 0o644)
	for _, r := range []int{2, 3} {
		exit := filepath.Join(filepath.Dir(l.LogPath(s.Key(), r)), "exit.json")
		deadline := time.Now().Add(10 * time.Second)
		for readExit(exit) == nil {
			if time.Now().After(deadline) {
				t.Fatalf("rank %d did not end", r)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	rec2 := &recorder{}
	l2 := newLauncher(t, dir, rec2)
	st := waitGang(t, l2, s.Key())
	for _, r := range st {
		if r.Exit == nil || r.Exit.ExitCode != 0 || r.Reason != "" {
			t.Errorf("rank %d: %+v", r.Rank, r)
		}
	}
	if n := len(rec2.find("job-e", 0, api.RankStarted)); n != 0 {
		t.Errorf("%d ranks reported started after their end", n)
	}
	if n := len(rec2.find("job-e", 0, api.RankExited)); n != 2 {
		t.Errorf("%d ranks reported ended, want 2", n)
	}
}

func TestLaunchErrors(t *testing.T) {
	rec := &recorder{}
	l := newLauncher(t, t.TempDir(), rec)
	s := spec("job-x", 0, "sleep 60", "sleep 60")
	s.Command = []string{"/nonexistent/train"}
	if err := l.Sync([]Spec{s}); err != nil {
		t.Fatal(err)
	}
	st := waitGang(t, l, s.Key())
	if st[0].Exit.ExitCode != 127 && st[1].Exit.ExitCode != 127 {
		t.Errorf("no rank exited 127: %+v", st)
	}
	for _, r := range st {
		// The first to fail names itself; the other may be torn down
		// because of it: both name the launch error.
		if !strings.Contains(r.Reason, "launch error: ") || !strings.Contains(r.Reason, "/nonexistent/train") {
			t.Errorf("rank %d reason %q", r.Rank, r.Reason)
		}
	}
	// The rank that failed first says why in its log.
	first := st[0]
	if !strings.HasPrefix(first.Reason, "launch error") {
		first = st[1]
	}
	log, _ := os.ReadFile(l.LogPath(s.Key(), first.Rank))
	if !strings.Contains(string(log), "cannot start /nonexistent/train") {
		t.Errorf("rank %d log %q", first.Rank, log)
	}

	bad := spec("job-y", 0, "true")
	bad.Command = nil
	if err := l.Sync([]Spec{bad}); err == nil || !strings.Contains(err.Error(), "empty command") {
		t.Errorf("empty command: %v", err)
	}
	st = waitGang(t, l, bad.Key())
	if !strings.Contains(st[0].Reason, "empty command") || st[0].PID != 0 {
		t.Errorf("invalid spec: %+v", st[0])
	}
	for _, job := range []string{"", "..", "a/b"} {
		b := spec(job, 0, "true")
		if err := b.validate(); err == nil {
			t.Errorf("job %q accepted", job)
		}
	}
}

func TestLogRotation(t *testing.T) {
	rec := &recorder{}
	l := newLauncher(t, t.TempDir(), rec, func(c *Config) { c.LogMaxMB, c.LogMaxFiles = 1, 2 })
	// 3.5 MiB of output in 64 KiB lines.
	s := spec("job-log", 0, `i=0; while [ $i -lt 56 ]; do head -c 65535 /dev/zero | tr '\0' a; echo; i=$((i+1)); done; echo last`)
	l.Sync([]Spec{s})
	waitGang(t, l, s.Key())
	logPath := l.LogPath(s.Key(), 2)
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(logPath), "output*.log"))
	if len(files) != 3 {
		t.Fatalf("log files %v, want the current one and 2 rotated", files)
	}
	var total int64
	for _, f := range files {
		fi, _ := os.Stat(f)
		if fi.Size() > 1<<20 {
			t.Errorf("%s: %d bytes, over the 1 MiB limit", f, fi.Size())
		}
		total += fi.Size()
	}
	cur, _ := os.ReadFile(logPath)
	if !strings.HasSuffix(string(cur), "last\n") {
		t.Errorf("current log does not end with the last line")
	}
	if total < 2<<20 {
		t.Errorf("kept %d bytes", total)
	}
}

func TestWorkingDir(t *testing.T) {
	rec := &recorder{}
	dir := t.TempDir()
	l := newLauncher(t, dir, rec)
	abs := t.TempDir()
	s := spec("job-w", 0, "pwd")
	s.WorkingDir = abs
	rel := spec("job-w2", 0, "pwd")
	rel.WorkingDir = "."
	l.Sync([]Spec{s, rel})
	waitGang(t, l, s.Key())
	waitGang(t, l, rel.Key())
	if b, _ := os.ReadFile(l.LogPath(s.Key(), 2)); string(b) != abs+"\n" {
		t.Errorf("absolute workingDir: ran in %q, want %q", b, abs)
	}
	want := filepath.Join(dir, "jobs", "job-w2", "work", "rank-2")
	if b, _ := os.ReadFile(l.LogPath(rel.Key(), 2)); string(b) != want+"\n" {
		t.Errorf("relative workingDir: ran in %q, want %q", b, want)
	}
}

// TestRankInheritsNoStrayDescriptors: a descriptor the agent holds without
// close-on-exec (inherited from whoever started it) does not reach ranks.
func TestRankInheritsNoStrayDescriptors(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	syscall.Syscall(syscall.SYS_FCNTL, w.Fd(), syscall.F_SETFD, 0) // as if inherited
	rec := &recorder{}
	l := newLauncher(t, t.TempDir(), rec, func(c *Config) { c.Prestart = 1 })
	s := spec("job-fd", 0, "ls /proc/self/fd")
	l.Sync([]Spec{s})
	waitGang(t, l, s.Key())
	log, _ := os.ReadFile(l.LogPath(s.Key(), 2))
	for _, fd := range strings.Fields(string(log)) {
		if n, _ := strconv.Atoi(fd); n > 3 { // 0-2, and ls's own directory descriptor
			t.Errorf("the rank has descriptor %d: %q", n, log)
		}
	}
}
