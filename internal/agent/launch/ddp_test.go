package launch

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/testnet"
)

// needTorch skips unless Debian's python3-torch is importable (only
// /usr/bin/python3 sees it: a pyenv python3 may come first on PATH).
func needTorch(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping the PyTorch job")
	}
	out, err := exec.Command("/usr/bin/python3", "-c", "import torch, torch.distributed as d; print(d.is_gloo_available())").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "True" {
		t.Skipf("skipping: /usr/bin/python3 cannot import torch with gloo (apt-get install python3-torch): %v %s", err, out)
	}
}

var stepLine = regexp.MustCompile(`(?m)^step (\d+) loss ([0-9.]+)$`)

// losses reads the "step N loss X" lines of a log.
func losses(t *testing.T, log string) (steps []int, loss []float64) {
	t.Helper()
	for _, m := range stepLine.FindAllStringSubmatch(log, -1) {
		s, _ := strconv.Atoi(m[1])
		l, _ := strconv.ParseFloat(m[2], 64)
		steps, loss = append(steps, s), append(loss, l)
	}
	return steps, loss
}

// TestDDPTrainingTwoRanks runs examples/ddp/train.py as a two-rank gang on
// 127.0.0.1 through the launcher, then a second generation that resumes
// from its checkpoint.
func TestDDPTrainingTwoRanks(t *testing.T) {
	needTorch(t)
	script, err := filepath.Abs("../../../examples/ddp/train.py")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	l := newLauncher(t, t.TempDir(), rec, func(c *Config) { c.BaseEnv = os.Environ() })
	gen := func(g, steps int) Spec {
		return Spec{Assignment: api.Assignment{
			Job: "ddp", Generation: g, Launch: api.LaunchPerGPU, WorldSize: 2, Nodes: 1,
			Processes:  []api.Process{{Rank: 0, LocalRank: 0, GPUs: []int{0}}, {Rank: 1, LocalRank: 1, GPUs: []int{1}}},
			Command:    []string{"/usr/bin/python3", script, "--steps", strconv.Itoa(steps), "--ckpt-every", "5"},
			MasterAddr: "127.0.0.1", MasterPort: testnet.FreePort(t),
		}}
	}
	g1 := gen(1, 20)
	start := time.Now()
	if err := l.Sync([]Spec{g1}); err != nil {
		t.Fatal(err)
	}
	if !l.Wait(g1.Key(), 5*time.Minute) {
		t.Fatal("training did not end")
	}
	t.Logf("2 ranks, 20 steps: %v", time.Since(start))
	st, _ := l.Status(g1.Key())
	for _, r := range st {
		log, _ := os.ReadFile(l.LogPath(g1.Key(), r.Rank))
		if r.Exit.ExitCode != 0 {
			t.Fatalf("rank %d: %s\n%s", r.Rank, r.Reason, log)
		}
		if !strings.Contains(string(log), "rank="+strconv.Itoa(r.Rank)+" world_size=2 ") {
			t.Errorf("rank %d did not run as RANK=%d of WORLD_SIZE=2:\n%s", r.Rank, r.Rank, log)
		}
		steps, loss := losses(t, string(log))
		if len(steps) != 20 || steps[0] != 1 || steps[19] != 20 {
			t.Fatalf("rank %d steps %v", r.Rank, steps)
		}
		if loss[19] >= loss[0]/4 {
			t.Errorf("rank %d: loss %v -> %v, want it to fall at least 4x", r.Rank, loss[0], loss[19])
		}
	}

	// A restart of the gang resumes from the checkpoint: the step counter
	// continues.
	g2 := gen(2, 30)
	if err := l.Sync([]Spec{g2}); err != nil {
		t.Fatal(err)
	}
	if !l.Wait(g2.Key(), 5*time.Minute) {
		t.Fatal("second generation did not end")
	}
	log, _ := os.ReadFile(l.LogPath(g2.Key(), 0))
	if !strings.Contains(string(log), "resumed from step 20") {
		t.Errorf("generation 2 did not resume:\n%s", log)
	}
	if steps, _ := losses(t, string(log)); len(steps) != 10 || steps[0] != 21 || steps[9] != 30 {
		t.Errorf("generation 2 steps %v, want 21..30", steps)
	}
}
