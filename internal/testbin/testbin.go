// Package testbin gives tests that run programs of this module as
// processes their binaries, built once per test process.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"testing"
)

// ModelServer is the serving tests' model stand-in (a real HTTP server
// answering after MODEL_DELAY, on PORT).
const ModelServer = "gpucloud/internal/serving/internal/modelserver"

type binary struct {
	once sync.Once
	path string
	err  error
}

var (
	mu    sync.Mutex
	built = map[string]*binary{}
	dir   string
)

// Gpucloud returns $GPUCLOUD_BIN, or cmd/gpucloud built by Build.
func Gpucloud(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping a test that builds and runs the gpucloud binary")
	}
	if p := os.Getenv("GPUCLOUD_BIN"); p != "" {
		return p
	}
	return Build(t, "gpucloud/cmd/gpucloud")
}

// Build builds the command package pkg (an import path of this module)
// once per test process (seconds, from the build cache) and returns the
// binary's path. It skips the test with -short.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping a test that builds and runs " + pkg)
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go tool on PATH to build %s (for cmd/gpucloud, GPUCLOUD_BIN may name a binary instead)", pkg)
	}
	mu.Lock()
	b := built[pkg]
	if b == nil {
		b = &binary{}
		built[pkg] = b
	}
	mu.Unlock()
	b.once.Do(func() {
		mu.Lock()
		if dir == "" {
			dir, b.err = os.MkdirTemp("", "gpucloud-testbin-")
		}
		d := dir
		mu.Unlock()
		if b.err != nil {
			return
		}
		b.path = filepath.Join(d, path.Base(pkg))
		cmd := exec.Command(gobin, "build", "-buildvcs=false", "-o", b.path, pkg)
		cmd.Env = append(os.Environ(), "CGO_CFLAGS=-Wno-deprecated-declarations")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// Main runs the tests of a package that uses Build, then removes the
// binaries: `func TestMain(m *testing.M) { testbin.Main(m) }`.
func Main(m *testing.M) {
	code := m.Run()
	Remove()
	os.Exit(code)
}

// Remove deletes the binaries built.
func Remove() {
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		os.RemoveAll(dir)
	}
}
