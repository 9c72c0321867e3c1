package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gpucloud/internal/agent/launch"
	"gpucloud/internal/api"
)

// TestTailerFollowsRotation reads a log that is rotated between reads (as
// the shim's lumberjack does: rename, then a new file) without losing or
// repeating a byte, and resumes from its saved position.
func TestTailerFollowsRotation(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "output.log")
	write := func(s string) {
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
	}
	var shipped strings.Builder
	drain := func(tl *tailer) {
		t.Helper()
		for {
			eof, err := tl.fill()
			if err != nil {
				t.Fatal(err)
			}
			shipped.Write(tl.buf)
			tl.off += int64(len(tl.buf))
			tl.buf = tl.buf[:0]
			tl.save()
			if eof {
				return
			}
		}
	}
	tl := &tailer{path: logPath, state: filepath.Join(dir, "relay.json")}
	write("one\ntwo\n")
	drain(tl)
	write("three\n")
	// Rotation: more written to the old file after our last read, then a
	// rename and a new file.
	if err := os.Rename(logPath, filepath.Join(dir, "output-2026-01-01T00-00-00.000.log")); err != nil {
		t.Fatal(err)
	}
	write("four\n")
	drain(tl)
	if got := shipped.String(); got != "one\ntwo\nthree\nfour\n" {
		t.Fatalf("shipped %q", got)
	}
	if tl.off != int64(len("one\ntwo\nthree\nfour\n")) {
		t.Errorf("offset %d", tl.off)
	}
	tl.close()

	// A new agent resumes where the old one stopped.
	write("five\n")
	tl2 := &tailer{path: logPath, state: tl.state}
	tl2.load()
	if tl2.off != tl.off {
		t.Fatalf("resumed at offset %d, want %d", tl2.off, tl.off)
	}
	shipped.Reset()
	drain(tl2)
	if got := shipped.String(); got != "five\n" {
		t.Errorf("after restart shipped %q, want only the new line", got)
	}
}

func TestRouteAddress(t *testing.T) {
	for _, s := range []string{"http://127.0.0.1:8080", "127.0.0.1:8080", "http://127.0.0.1"} {
		if a, err := routeAddress(s); err != nil || a != "127.0.0.1" {
			t.Errorf("routeAddress(%q) = %q, %v", s, a, err)
		}
	}
}

func TestHostsOfOneNodeGang(t *testing.T) {
	a := &Agent{cfg: Config{Address: "10.0.0.7"}}
	one := api.Assignment{Nodes: 1, Processes: []api.Process{{Rank: 0, GPUs: []int{0, 1}}, {Rank: 1, GPUs: []int{2, 3}}}}
	if h := a.hosts(one); len(h) != 1 || h[0] != (launch.Host{Name: "10.0.0.7", Slots: 4}) {
		t.Errorf("one-node gang: %+v", h)
	}
	two := one
	two.Nodes = 2
	if h := a.hosts(two); h != nil {
		t.Errorf("two-node gang without the hosts in the assignment: %+v", h)
	}
}
