package agent_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/testbin"
)

// needTorch skips unless Debian's python3-torch is importable (only
// /usr/bin/python3 sees it).
func needTorch(t *testing.T) {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", "-c", "import torch, torch.distributed as d; print(d.is_gloo_available())").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "True" {
		t.Skipf("skipping: /usr/bin/python3 cannot import torch with gloo (apt-get install python3-torch): %v %s", err, out)
	}
}

func trainScript(t *testing.T) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "examples", "ddp", "train.py")
}

var stepRE = regexp.MustCompile(`(?m)^step (\d+) loss ([0-9.]+)$`)

type step struct {
	n    int
	loss float64
}

func steps(log string) []step {
	var out []step
	for _, m := range stepRE.FindAllStringSubmatch(log, -1) {
		n, _ := strconv.Atoi(m[1])
		l, _ := strconv.ParseFloat(m[2], 64)
		out = append(out, step{n, l})
	}
	return out
}

func ddpJob(t *testing.T, name string, args ...string) *api.Job {
	return &api.Job{Metadata: api.ObjectMeta{Name: name}, Spec: api.JobSpec{
		Replicas: 2, GPUsPerReplica: 1, Launch: api.LaunchPerGPU,
		Command: append([]string{"/usr/bin/python3", trainScript(t)}, args...),
	}}
}

// TestDDPJobEndToEnd runs examples/ddp/train.py as a 2-replica job through
// a real server and two agents on different addresses.
func TestDDPJobEndToEnd(t *testing.T) {
	testbin.Gpucloud(t)
	needTorch(t)
	c := newCluster(t, []int{1, 1})
	start := time.Now()
	j := c.submit(ddpJob(t, "ddp", "--steps", "30", "--ckpt-every", "10"))
	j = c.waitPhase(j.Metadata.ID, api.PhaseSucceeded, 5*time.Minute)
	t.Logf("2-rank DDP job, 30 steps: submitted to Succeeded in %v", time.Since(start))
	if j.Status.Restarts != 0 {
		t.Errorf("%d restarts", j.Status.Restarts)
	}
	for rank := range 2 {
		// Each agent ships a rank's last lines before it reports the exit,
		// so a Succeeded job has its whole output on the server at once.
		log := c.logs(j.Metadata.ID, rank)
		if !strings.Contains(log, "done rank=") {
			t.Errorf("rank %d: the log lacks its last line right after Succeeded:\n%s", rank, log)
		}
		if !strings.Contains(log, "rank="+strconv.Itoa(rank)+" world_size=2 local_rank=0 node_rank="+strconv.Itoa(rank)+" ") {
			t.Errorf("rank %d did not run as RANK=%d WORLD_SIZE=2 on node %d:\n%s", rank, rank, rank, log)
		}
		if !strings.Contains(log, "cuda_visible_devices=0 ") {
			t.Errorf("rank %d: CUDA_VISIBLE_DEVICES is not its GPU:\n%s", rank, log)
		}
		st := steps(log)
		if len(st) != 30 || st[0].n != 1 || st[29].n != 30 {
			t.Fatalf("rank %d steps %v", rank, st)
		}
		if st[29].loss >= st[0].loss/4 {
			t.Errorf("rank %d: loss %v -> %v, want it to fall at least 4x", rank, st[0].loss, st[29].loss)
		}
	}
	// The master is node 0's address: the ranks met across hosts.
	if log := c.logs(j.Metadata.ID, 1); !strings.Contains(log, "master="+c.nodes[0].addr+":") && !strings.Contains(log, "master="+c.nodes[1].addr+":") {
		t.Errorf("rank 1 did not rendezvous at a node's address:\n%s", log)
	}
}

// TestLastLogLinesBeforeSucceeded: ranks that print their last line (with
// and without a newline) right before they exit have it on the server the
// moment the job is Succeeded, several times over (the relay's own tick
// would often miss it).
func TestLastLogLinesBeforeSucceeded(t *testing.T) {
	testbin.Gpucloud(t)
	c := newCluster(t, []int{2})
	for i := range 5 {
		j := c.submit(&api.Job{Metadata: api.ObjectMeta{Name: "last-" + strconv.Itoa(i)}, Spec: api.JobSpec{
			Replicas: 2, GPUsPerReplica: 1, Launch: api.LaunchPerGPU,
			Command: []string{"/bin/sh", "-c", `echo "first $RANK"; sleep 0.3; echo "second $RANK"; printf "last $RANK"`},
		}})
		j = c.waitPhase(j.Metadata.ID, api.PhaseSucceeded, time.Minute)
		for rank := range 2 {
			r := strconv.Itoa(rank)
			if log := c.logs(j.Metadata.ID, rank); log != "first "+r+"\nsecond "+r+"\nlast "+r {
				t.Fatalf("job %d rank %d: log right after Succeeded is %q", i, rank, log)
			}
		}
	}
}

// TestDDPJobSurvivesAKilledRank kills one rank in the middle of the job:
// the gang is torn down, restarted once, resumes from its checkpoint (the
// step counter continues) and succeeds.
func TestDDPJobSurvivesAKilledRank(t *testing.T) {
	testbin.Gpucloud(t)
	needTorch(t)
	c := newCluster(t, []int{1, 1})
	jb := ddpJob(t, "ddp-fault", "--steps", "40", "--ckpt-every", "5", "--step-time", "0.15")
	jb.Spec.RestartPolicy.MaxRestarts = 1
	j := c.submit(jb)
	id := j.Metadata.ID
	j = c.waitPhase(id, api.PhaseRunning, time.Minute)
	gen := j.Status.Generation
	// Let it checkpoint, then kill rank 1's process on its node.
	waitFor(t, 3*time.Minute, "a checkpoint", func() bool { return strings.Contains(c.logs(id, 0), "checkpoint step 10\n") })
	victim := c.nodeOfRank(t, id, gen, 1)
	pid := rankProcess(t, victim, id, gen, 1)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	j = c.waitPhase(id, api.PhaseSucceeded, 5*time.Minute)
	t.Logf("killed rank 1 (pid %d) at a checkpointed step; restarted and Succeeded %v later", pid, time.Since(killed).Round(time.Millisecond))
	if j.Status.Restarts != 1 || j.Status.Generation != gen+1 {
		t.Errorf("restarts %d generation %d, want 1 restart to generation %d", j.Status.Restarts, j.Status.Generation, gen+1)
	}
	var log string
	waitFor(t, 30*time.Second, "rank 0's last line", func() bool {
		log = c.logs(id, 0)
		return strings.Count(log, "done rank=0") == 1
	})
	i := strings.Index(log, "resumed from step ")
	if i < 0 {
		t.Fatalf("the restarted gang did not resume:\n%s", log)
	}
	resumed, _ := strconv.Atoi(strings.Fields(log[i+len("resumed from step "):])[0])
	after := steps(log[i:])
	if resumed < 10 || len(after) == 0 || after[0].n != resumed+1 || after[len(after)-1].n != 40 {
		t.Errorf("resumed from step %d, then steps %v, want %d..40", resumed, after, resumed+1)
	}
	if st := steps(log[:i]); len(st) < resumed {
		t.Errorf("first generation ran %d steps, resumed from %d", len(st), resumed)
	}
	evs, _ := c.user.JobEvents(context.Background(), id)
	var restarted bool
	for _, e := range evs {
		if e.Reason == "Restarted" && strings.Contains(e.Message, "rank 1") && strings.Contains(e.Message, "137") {
			restarted = true
		}
	}
	if !restarted {
		t.Errorf("no Restarted event naming rank 1's exit 137: %+v", evs)
	}
}

// nodeOfRank is the node that runs a rank of a job generation.
func (c *cluster) nodeOfRank(t *testing.T, job string, gen, rank int) *node {
	t.Helper()
	for _, n := range c.nodes {
		if _, err := os.Stat(filepath.Join(n.dataDir, "jobs", job, "gen-"+strconv.Itoa(gen), "rank-"+strconv.Itoa(rank), "shim.json")); err == nil {
			return n
		}
	}
	t.Fatalf("no node runs rank %d of %s/%d", rank, job, gen)
	return nil
}

// sleepJob is a 2-replica gang whose ranks print a line and sleep.
func sleepJob(name string) *api.Job {
	return &api.Job{Metadata: api.ObjectMeta{Name: name}, Spec: api.JobSpec{
		Replicas: 2, GPUsPerReplica: 1, Launch: api.LaunchPerGPU,
		Command: []string{"sh", "-c", `echo "rank $RANK of $WORLD_SIZE up"; exec sleep 600`},
	}}
}

// TestAgentRestartCancelAndLostNode: an agent killed and restarted finds
// its ranks (no double start, no orphan); cancel tears the gang down on
// every node; a node whose agent dies is declared Down after its lease and
// its gang requeued, and when the agent comes back it kills what the
// control plane no longer assigns.
func TestAgentRestartCancelAndLostNode(t *testing.T) {
	c := newCluster(t, []int{1, 1})
	ctx := context.Background()
	j := c.submit(sleepJob("sleeper"))
	id := j.Metadata.ID
	j = c.waitPhase(id, api.PhaseRunning, time.Minute)
	gen := j.Status.Generation
	for rank := range 2 {
		waitFor(t, time.Minute, "rank "+strconv.Itoa(rank)+" up", func() bool {
			return strings.Contains(c.logs(id, rank), "rank "+strconv.Itoa(rank)+" of 2 up")
		})
	}
	a := c.nodeOfRank(t, id, gen, 0)
	pidA := rankProcess(t, a, id, gen, 0)

	// 1. The agent crashes and comes back: the rank runs on, adopted.
	c.kill(a.agent)
	time.Sleep(500 * time.Millisecond)
	if !alive(pidA) {
		t.Fatal("the rank died with its agent")
	}
	c.startAgent(a, c.agentTok)
	waitFor(t, 30*time.Second, "the agent to re-register", func() bool {
		return strings.Contains(a.agent.out.String(), "registered")
	})
	time.Sleep(2 * time.Second) // a few heartbeats and assignment sets
	if got := rankProcess(t, a, id, gen, 0); got != pidA || !alive(pidA) {
		t.Fatalf("rank 0 is pid %d (alive %v), was %d: started twice or lost", got, alive(pidA), pidA)
	}
	if j := c.job(id); j.Status.Phase != api.PhaseRunning || j.Status.Generation != gen {
		t.Fatalf("after the agent restart the job is %s generation %d (%s)", j.Status.Phase, j.Status.Generation, j.Status.Reason)
	}

	// 2. Cancel: every rank on every node goes.
	b := c.nodeOfRank(t, id, gen, 1)
	pidB := rankProcess(t, b, id, gen, 1)
	if _, err := c.user.Cancel(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the cancelled ranks to end", func() bool { return !alive(pidA) && !alive(pidB) })

	// 3. A node is lost: its gang is requeued; when its agent returns it
	// kills the ranks it is no longer assigned.
	j2 := c.submit(sleepJob("sleeper-2"))
	id2 := j2.Metadata.ID
	j2 = c.waitPhase(id2, api.PhaseRunning, time.Minute)
	gen2 := j2.Status.Generation
	waitFor(t, time.Minute, "both ranks up", func() bool {
		return strings.Contains(c.logs(id2, 0), "up") && strings.Contains(c.logs(id2, 1), "up")
	})
	lost := c.nodeOfRank(t, id2, gen2, 1)
	kept := c.nodeOfRank(t, id2, gen2, 0)
	pidLost := rankProcess(t, lost, id2, gen2, 1)
	pidKept := rankProcess(t, kept, id2, gen2, 0)
	c.kill(lost.agent)
	waitFor(t, 30*time.Second, "the node to go Down", func() bool {
		n, err := c.admin.Node(ctx, lost.name)
		return err == nil && n.Status.Phase == api.NodeDown
	})
	waitFor(t, 30*time.Second, "the gang to leave the node still up", func() bool {
		j := c.job(id2)
		return j.Status.Generation != gen2 || j.Status.Phase == api.PhasePending
	})
	waitFor(t, 20*time.Second, "the kept node's rank to be torn down", func() bool { return !alive(pidKept) })
	if !alive(pidLost) {
		t.Fatal("the rank on the lost node died without its agent")
	}
	c.startAgent(lost, c.agentTok)
	waitFor(t, 30*time.Second, "the returning agent to kill its unassigned rank", func() bool { return !alive(pidLost) })
	// Both nodes are back: the gang runs again, in a new generation.
	j2 = c.waitPhase(id2, api.PhaseRunning, time.Minute)
	if j2.Status.Generation <= gen2 {
		t.Errorf("generation %d after the requeue, was %d", j2.Status.Generation, gen2)
	}
	if _, err := c.user.Cancel(ctx, id2); err != nil {
		t.Fatal(err)
	}
}

// TestHealthCheckCordons: a failing health script cordons the node with
// its reason; when it passes again the agent lifts its own cordon.
func TestHealthCheckCordons(t *testing.T) {
	dir := t.TempDir()
	flag := filepath.Join(dir, "broken")
	script := filepath.Join(dir, "check.sh")
	body := "#!/bin/sh\nif [ -e " + flag + " ]; then echo 'ERROR: nhc: Health check failed: check_fs_mount: /scratch not mounted'; exit 1; fi\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, []int{2}, "--health-script", script, "--health-interval", "200ms")
	n := c.nodes[0]
	// An agent token may not cordon (the protocol has no health field
	// yet): this agent runs with the admin's.
	c.stop(n.agent)
	c.startAgent(n, c.adminToken())
	ctx := context.Background()
	node, err := c.admin.Node(ctx, n.name)
	if err != nil {
		t.Fatal(err)
	}
	if len(node.Status.Inventory.GPUs) != 2 || !node.Status.Inventory.GPUs[0].Emulated || node.Status.Inventory.GPUs[0].Model != "H100-80GB" {
		t.Errorf("registered GPUs %+v, want 2 emulated H100-80GB", node.Status.Inventory.GPUs)
	}
	os.WriteFile(flag, nil, 0o644)
	want := "agent health check: script: ERROR: nhc: Health check failed: check_fs_mount: /scratch not mounted"
	waitFor(t, 30*time.Second, "the cordon", func() bool {
		node, err = c.admin.Node(ctx, n.name)
		return err == nil && node.Spec.Cordoned && node.Status.Reason == want
	})
	os.Remove(flag)
	waitFor(t, 30*time.Second, "the cordon to lift", func() bool {
		node, err = c.admin.Node(ctx, n.name)
		return err == nil && !node.Spec.Cordoned
	})
}

func (c *cluster) adminToken() string {
	b, err := os.ReadFile(filepath.Join(c.dir, "server", "admin.token"))
	if err != nil {
		c.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// BenchmarkPlacementToRankStart measures, through the whole system, the
// time from the placement the scheduler writes (the job's startedAt) to
// the moment each rank's own process runs: the job is /bin/date +%s%N on
// two nodes, and the last rank to start counts. The path is the etcd
// write, the server's watch, the assignment stream, the agent's Sync and a
// prestarted shim's fork/exec.
func BenchmarkPlacementToRankStart(b *testing.B) {
	c := newCluster(b, []int{1, 1})
	var lat []time.Duration
	for i := 0; i < b.N; i++ {
		j := c.submit(&api.Job{Metadata: api.ObjectMeta{Name: "date-" + strconv.Itoa(i)}, Spec: api.JobSpec{
			Replicas: 2, GPUsPerReplica: 1, Launch: api.LaunchPerGPU, Command: []string{"/bin/date", "+%s%N"}}})
		j = c.waitPhase(j.Metadata.ID, api.PhaseSucceeded, time.Minute)
		var last time.Duration
		for rank := range 2 {
			var ns int64
			waitFor(b, 10*time.Second, "the rank's clock", func() bool {
				var err error
				ns, err = strconv.ParseInt(strings.TrimSpace(c.logs(j.Metadata.ID, rank)), 10, 64)
				return err == nil
			})
			last = max(last, time.Unix(0, ns).Sub(j.Status.StartedAt))
		}
		lat = append(lat, last)
		time.Sleep(300 * time.Millisecond) // let the shim pools refill, as between real assignments
	}
	b.StopTimer()
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	b.ReportMetric(ms(lat[len(lat)/2]), "ms-p50")
	b.ReportMetric(ms(lat[len(lat)*9/10]), "ms-p90")
	b.ReportMetric(ms(lat[len(lat)-1]), "ms-max")
}
