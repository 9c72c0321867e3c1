package web

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/client"
	"gpucloud/internal/testbin"
	"gpucloud/internal/testnet"

	"github.com/chromedp/chromedp"
)

// TestMain removes the gpucloud binary the tests built (testbin).
func TestMain(m *testing.M) { testbin.Main(m) }

// TestDashboardAgainstUp runs `gpucloud up` (this machine's agent with
// emulated GPUs plus eight simulated ND H100 v5-like nodes), opens the
// dashboard it serves, and watches a job whose rank is a real process turn
// Running and then Succeeded.
func TestDashboardAgainstUp(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the test that builds and runs gpucloud up")
	}
	chromiumPath(t)
	bin := testbin.Gpucloud(t)
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", testnet.FreePort(t))
	up := exec.Command(bin, "up", "--data-dir", filepath.Join(dir, "data"), "--listen", addr, "--no-config",
		"--node-name", "this-node", "--preset", "ndv5", "--gpus", "64", "--grace-period", "1s")
	up.Env = append(os.Environ(), "HOME="+dir)
	stdout, err := up.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	up.Stderr = up.Stdout
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
		exited <- up.Wait()
	}()
	t.Cleanup(func() {
		up.Process.Signal(syscall.SIGINT) // a clean stop: ranks stopped, etcd closed
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			up.Process.Kill()
			t.Error("gpucloud up did not stop within 20s of SIGINT")
		}
	})
	var dashURL string
	var out []string
	for dashURL == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("gpucloud up exited:\n%s", strings.Join(out, "\n"))
			}
			out = append(out, l)
			if f := strings.Fields(l); len(f) == 2 && f[0] == "dashboard:" {
				dashURL = f[1]
			} else if len(f) > 2 && f[0] == "dashboard:" {
				t.Fatalf("gpucloud up serves no dashboard (cmd/gpucloud/up_web.go links web.Handler into up): %s", l)
			}
		case <-time.After(40 * time.Second):
			t.Fatalf("gpucloud up printed no dashboard address in 40s:\n%s", strings.Join(out, "\n"))
		}
	}
	go func() {
		for range lines {
		}
	}()
	token, err := os.ReadFile(filepath.Join(dir, "data", "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), `<meta charset="utf-8">`) {
		t.Fatalf("gpucloud up serves no dashboard at /: %d %.200s", resp.StatusCode, page)
	}

	b := newBrowser(t, 50*time.Second)
	b.do(t, "opening the dashboard of gpucloud up", chromedp.Navigate(dashURL))
	b.waitJS(t, "the page to start", `document.body && document.body.dataset.ready === 'true'`, 10*time.Second)
	b.waitJS(t, "the nine nodes of up", `document.querySelectorAll('#nodes tr[data-node]').length === 9 && document.querySelector('#sum-nodes').textContent === '9 / 9'`, 15*time.Second)

	// One rank that runs until the test lets it finish.
	release := filepath.Join(dir, "release")
	admin := client.New([]string{"http://" + addr}, strings.TrimSpace(string(token)), client.Options{})
	j, err := admin.Submit(context.Background(), &api.Job{APIVersion: api.Version, Kind: api.KindJob,
		Metadata: api.ObjectMeta{Name: "wait-for-release", Tenant: "default"},
		Spec:     api.JobSpec{Replicas: 1, GPUsPerReplica: 8, Command: []string{"sh", "-c", "while [ ! -e " + release + " ]; do sleep 0.1; done"}}})
	if err != nil {
		t.Fatal(err)
	}
	id := j.Metadata.ID
	b.waitJS(t, "the job Running on the page", fmt.Sprintf(`document.querySelector('#running tr[data-job=%q]')`, id), 20*time.Second)
	b.waitJS(t, "its eight GPUs on the map", fmt.Sprintf(`(() => { const p = gpucloud.summary(); return p.placed === 1; })()`), 2*time.Second)
	b.screenshot(t, "dashboard-up-running.png")
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b.waitJS(t, "the job Succeeded on the page", fmt.Sprintf(`document.querySelector('#recent tr[data-job=%q][data-phase="Succeeded"]')`, id), 20*time.Second)
	b.screenshot(t, "dashboard-up-succeeded.png")
	b.check(t)
}
