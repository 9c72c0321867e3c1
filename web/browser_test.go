package web

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The browser tests drive Debian's headless chromium (apt-get install
// chromium) through the DevTools protocol. They skip when no browser is
// found; GPUCLOUD_CHROMIUM names one explicitly. Screenshots go to
// $GPUCLOUD_ARTIFACTS (default: gpucloud-web in the temp directory), and
// the test logs where.

func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("GPUCLOUD_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium binary found (apt-get install chromium, or set GPUCLOUD_CHROMIUM): skipping the browser test")
	return ""
}

func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("GPUCLOUD_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "gpucloud-web")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browser is one headless chromium with a fresh profile. Uncaught
// exceptions and console errors of the page fail the test.
type browser struct {
	ctx  context.Context
	mu   sync.Mutex
	errs []string
}

func newBrowser(t *testing.T, timeout time.Duration) *browser {
	t.Helper()
	exe := chromiumPath(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 900),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("hide-scrollbars", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", exe, err)
	}
	b := &browser{ctx: ctx}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			// Failed requests are logged by the browser with source
			// "network"; the page handles those (401 shows the sign-in).
			if (m.Type == chromedp.ConsoleError && m.Source != "network") || m.IsException() {
				b.mu.Lock()
				b.errs = append(b.errs, m.String())
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// check fails the test for every error the page wrote so far.
func (b *browser) check(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.errs {
		t.Errorf("page: %s", e)
	}
	b.errs = nil
}

func (b *browser) do(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.check(t)
		t.Fatalf("%s: %v", what, err)
	}
}

// eval runs a JS expression (awaiting a promise) and decodes its value.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.check(t)
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitJS polls a JS expression until it is true. Errors count as "not
// yet": the page may be between two documents.
func (b *browser) waitJS(t *testing.T, what, expr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		if err == nil && ok {
			return
		}
		b.mu.Lock()
		broken := len(b.errs) > 0
		b.mu.Unlock()
		if broken || b.ctx.Err() != nil || time.Now().After(deadline) {
			b.check(t)
			t.Fatalf("timed out after %v waiting for %s (last error: %v)", d, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *browser) screenshot(t *testing.T, name string) string {
	t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(artifactDir(t), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d KB)", path, len(png)/1024)
	return path
}

// TestDemoFleetDrawTime draws a made-up 131,072-GPU fleet (16,384 nodes,
// 512 leaves, 16 blocks) in the browser and reports the time of a full
// repaint; every GPU cell must map back to itself through the hit test.
func TestDemoFleetDrawTime(t *testing.T) {
	b := newBrowser(t, 45*time.Second)
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	b.do(t, "loading the demo", chromedp.Navigate(srv.URL+"/?demo=131072"))
	b.waitJS(t, "the demo fleet", `document.body.dataset.ready === 'true'`, 20*time.Second)

	type benchResult struct {
		GPUs, Nodes, Leaves, Blocks int
		CellPx                      int
		Canvas                      [2]int
		LayoutMs, ColourMs, PaintMs float64
		FrameMs, FrameMaxMs         float64
		ChangeMs, SpreadMs          float64
		ChangeCells, SpreadCells    int
		Reps                        int
	}
	bench := eval[benchResult](t, b, `gpucloud.bench(15)`)
	if bench.GPUs != 131072 || bench.Nodes != 16384 || bench.Leaves != 512 || bench.Blocks != 16 {
		t.Fatalf("demo fleet: %+v, want 131072 GPUs on 16384 nodes, 512 leaves, 16 blocks", bench)
	}
	t.Logf("131,072 GPUs on a %dx%d canvas (%d px cells): full repaint %.1f ms median (colour pass %.1f ms, cells+put %.1f ms; worst %.1f ms of %d); layout %.1f ms; one job ending repaints %d cells in %.2f ms",
		bench.Canvas[0], bench.Canvas[1], bench.CellPx, bench.FrameMs, bench.ColourMs, bench.PaintMs, bench.FrameMaxMs, bench.Reps, bench.LayoutMs, bench.ChangeCells, bench.ChangeMs)
	t.Logf("20 jobs ending across the fleet repaint %d cells in %.1f ms", bench.SpreadCells, bench.SpreadMs)
	if bench.ChangeCells <= 0 || bench.ChangeCells >= bench.GPUs {
		t.Errorf("a job ending repainted %d cells; want only its own", bench.ChangeCells)
	}
	// Zoomed in to 3 px cells (9 times the pixels, the canvas scrolls).
	zoomed := eval[benchResult](t, b, `gpucloud.bench(15, 3)`)
	t.Logf("zoomed to %d px cells on a %dx%d canvas: full repaint %.1f ms median (colour pass %.1f ms, cells+put %.1f ms); layout %.1f ms; 20 jobs ending across the fleet repaint %d cells in %.1f ms",
		zoomed.CellPx, zoomed.Canvas[0], zoomed.Canvas[1], zoomed.FrameMs, zoomed.ColourMs, zoomed.PaintMs, zoomed.LayoutMs, zoomed.SpreadCells, zoomed.SpreadMs)
	eval[benchResult](t, b, `gpucloud.bench(1, 0)`) // back to fit

	type hitResult struct {
		GPUs, Mismatches int
		PerHitUs         float64
	}
	hits := eval[hitResult](t, b, `gpucloud.checkHitTest()`)
	if hits.GPUs != 131072 || hits.Mismatches != 0 {
		t.Errorf("hit test: %d of %d GPU cells map elsewhere", hits.Mismatches, hits.GPUs)
	}
	t.Logf("hit test: %.2f µs per lookup", hits.PerHitUs)

	// Pointing at a GPU names it; clicking it highlights its job.
	const node = "ndv5-00100"
	xy := eval[[2]float64](t, b, fmt.Sprintf(`(() => { const c = gpucloud.gpu(%q, 3).centre, r = document.querySelector('#map-overlay').getBoundingClientRect(); return [r.left + c.x, r.top + c.y]; })()`, node))
	b.do(t, "pointing at a GPU", chromedp.MouseEvent(chromedp.MouseMoved, xy[0], xy[1]))
	b.waitJS(t, "the tooltip", fmt.Sprintf(`!document.querySelector('#tooltip').hidden && document.querySelector('#tooltip').textContent.startsWith(%q)`, node+" GPU 3"), 2*time.Second)
	if job := eval[string](t, b, fmt.Sprintf(`gpucloud.gpu(%q, 3).job`, node)); job != "" {
		b.do(t, "clicking the GPU", chromedp.MouseClickXY(xy[0], xy[1]))
		b.waitJS(t, "its job highlighted", `!document.querySelector('#selection').hidden`, 2*time.Second)
		b.do(t, "pointing at the GPU again", chromedp.MouseEvent(chromedp.MouseMoved, xy[0]+1, xy[1]))
	}
	b.screenshot(t, "dashboard-demo-131072.png")

	// The churning demo: jobs end and start four times a second.
	b.do(t, "loading the churning demo", chromedp.Navigate(srv.URL+"/?demo=4096&churn=1"))
	b.waitJS(t, "finished jobs from the churn", `document.querySelectorAll('#recent tr[data-phase="Succeeded"]').length >= 3`, 10*time.Second)
	b.check(t)
}
