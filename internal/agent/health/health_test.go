package health

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"gpucloud/internal/agent/gpu"
	"gpucloud/internal/agent/ib"
)

func inv(devs ...gpu.Device) gpu.Inventory {
	return gpu.Inventory{Source: gpu.SourceNVML, Devices: devs}
}

func dev(i int, f ...func(*gpu.Device)) gpu.Device {
	d := gpu.Device{Index: i, UUID: "GPU-" + string(rune('a'+i)), Model: "NVIDIA H100 80GB HBM3", NVLinks: 18}
	for _, fn := range f {
		fn(&d)
	}
	return d
}

func TestGPUProblems(t *testing.T) {
	base := inv(dev(0), dev(1), dev(2))
	for _, tc := range []struct {
		name string
		now  gpu.Inventory
		err  error
		want []string
		bad  []int
	}{
		{"healthy", inv(dev(0), dev(1), dev(2)), nil, nil, nil},
		{"missing GPUs", inv(dev(0)), nil, []string{"gpu: 2 of 3 GPUs missing: GPU 1 (GPU-b), GPU 2 (GPU-c)"}, []int{1, 2}},
		{"NVML down", gpu.Inventory{}, errors.New("DeviceGetCount: GPU is lost"), []string{"gpu: NVML: DeviceGetCount: GPU is lost"}, nil},
		{"device error", inv(dev(0), dev(1, func(d *gpu.Device) { d.Errors = []string{"GetMemoryInfo: GPU is lost"} }), dev(2)), nil,
			[]string{"gpu: GPU 1 (GPU-b): NVML GetMemoryInfo: GPU is lost"}, []int{1}},
		{"ECC", inv(dev(0, func(d *gpu.Device) { d.ECCUncorrected = 2; d.ECCCorrected = 9 }), dev(1), dev(2)), nil,
			[]string{"gpu: GPU 0 (GPU-a): 2 uncorrectable ECC errors"}, []int{0}},
		{"Xids", inv(dev(0), dev(1, func(d *gpu.Device) { d.XIDs = []gpu.XID{{Code: 13}, {Code: 79}, {Code: 200}} }), dev(2)), nil,
			[]string{"gpu: GPU 1 (GPU-b): Xid 79 (GPU has fallen off the bus)", "gpu: GPU 1 (GPU-b): Xid 200"}, []int{1}},
		{"NVLink", inv(dev(0), dev(1), dev(2, func(d *gpu.Device) { d.NVLinks = 16; d.NVLinksDown = 2 })), nil,
			[]string{"gpu: GPU 2 (GPU-c): 2 of 18 NVLinks down"}, []int{2}},
		{"remap", inv(dev(0, func(d *gpu.Device) { d.RemapPending = true }), dev(1, func(d *gpu.Device) { d.RemapFailed = true; d.RemapPending = true }), dev(2)), nil,
			[]string{"gpu: GPU 0 (GPU-a): row remapping pending (reset the GPU)", "gpu: GPU 1 (GPU-b): row remapping failed (replace the GPU)"}, []int{0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Report{Problems: GPUProblems(base, tc.now, tc.err)}
			var got []string
			if r.Reason() != "" {
				got = strings.Split(r.Reason(), "; ")
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.bad, r.UnhealthyGPUs()); diff != "" {
				t.Errorf("unhealthy GPUs (-want +got):\n%s", diff)
			}
		})
	}
}

func port(state string) ib.Port {
	return ib.Port{Num: 1, State: state, PhysState: "LinkUp", LinkLayer: "InfiniBand"}
}

func TestIBProblems(t *testing.T) {
	base := []ib.HCA{{Name: "mlx5_0", Ports: []ib.Port{port("ACTIVE")}}, {Name: "mlx5_1", Ports: []ib.Port{port("ACTIVE")}}, {Name: "mlx5_2", Ports: []ib.Port{port("DOWN")}}}
	now := []ib.HCA{{Name: "mlx5_0", Ports: []ib.Port{{Num: 1, State: "DOWN", PhysState: "Polling"}}}, {Name: "mlx5_2", Ports: []ib.Port{port("DOWN")}}}
	var got []string
	for _, p := range IBProblems(base, now) {
		got = append(got, p.String())
	}
	want := []string{"infiniband: mlx5_0 port 1 DOWN (Polling)", "infiniband: mlx5_1 missing"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if p := IBProblems(base, base); len(p) != 0 {
		t.Errorf("no change reported %v", p)
	}
}

func writeScript(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "check.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestScript(t *testing.T) {
	ctx := context.Background()
	if p := (Script{Path: writeScript(t, "echo all good\n")}).Run(ctx); p != nil {
		t.Errorf("healthy script reported %v", p)
	}
	nhc := writeScript(t, `echo "Running check: check_hw_ib"
echo "ERROR:  nhc:  Health check failed:  check_hw_ib:  No IB port mlx5_ib3:1 is ACTIVE (LinkUp 400 Gb/sec)."
echo "Node health check failed. Check /var/log/nhc.log for details."
exit 1
`)
	p := (Script{Path: nhc}).Run(ctx)
	want := "ERROR: nhc: Health check failed: check_hw_ib: No IB port mlx5_ib3:1 is ACTIVE (LinkUp 400 Gb/sec)."
	if p == nil || p.Check != "script" || p.Message != want {
		t.Errorf("NHC-style failure: %+v, want %q", p, want)
	}
	if p := (Script{Path: writeScript(t, "exit 3\n")}).Run(ctx); p == nil || !strings.Contains(p.Message, "exit status 3") {
		t.Errorf("silent failure: %+v, want the exit status", p)
	}
}

func TestScriptTimeoutKillsItsChildren(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	s := Script{Path: writeScript(t, "sleep 30 &\necho $! > "+pidFile+"\nwait\n"), Timeout: 300 * time.Millisecond}
	start := time.Now()
	p := s.Run(context.Background())
	if p == nil || !strings.Contains(p.Message, "timed out after 300ms") {
		t.Fatalf("got %+v, want a timeout", p)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("timeout took %v", d)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the script's child %d outlived the timeout", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestScriptValidate(t *testing.T) {
	if err := (Script{Path: "/nonexistent/check"}).Validate(); err == nil || !strings.Contains(err.Error(), "--health-script") {
		t.Errorf("missing script: %v", err)
	}
	p := filepath.Join(t.TempDir(), "x")
	os.WriteFile(p, []byte("#!/bin/sh\n"), 0o644)
	if err := (Script{Path: p}).Validate(); err == nil || !strings.Contains(err.Error(), "not an executable") {
		t.Errorf("non-executable script: %v", err)
	}
}

// source is a gpu.Source whose inventory the test changes.
type source struct{ inv gpu.Inventory }

func (s *source) Inventory() (gpu.Inventory, error) { return s.inv, nil }
func (s *source) Close() error                      { return nil }

func TestCheckerCordonReason(t *testing.T) {
	emu, err := gpu.NewEmulated(2, "H100-80GB", "n1")
	if err != nil {
		t.Fatal(err)
	}
	base, _ := emu.Inventory()
	src := &source{inv: base}
	root := t.TempDir()
	state := filepath.Join(root, "mlx5_0", "ports", "1", "state")
	os.MkdirAll(filepath.Dir(state), 0o755)
	os.WriteFile(state, []byte("4: ACTIVE\n"), 0o644)
	flag := filepath.Join(t.TempDir(), "bad")
	script := &Script{Path: writeScript(t, "if [ -e "+flag+" ]; then echo 'ERROR: disk /scratch read-only'; exit 1; fi\n")}

	c, err := NewChecker(src, root, script)
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Check(context.Background()); !r.Healthy() {
		t.Fatalf("fresh node unhealthy: %s", r.Reason())
	}
	src.inv.Devices = src.inv.Devices[:1]
	os.WriteFile(state, []byte("1: DOWN\n"), 0o644)
	os.WriteFile(flag, nil, 0o644)
	r := c.Check(context.Background())
	want := "gpu: 1 of 2 GPUs missing: GPU 1 (" + base.Devices[1].UUID + "); infiniband: mlx5_0 port 1 DOWN (); script: ERROR: disk /scratch read-only"
	if r.Healthy() || r.Reason() != want {
		t.Errorf("reason %q\nwant   %q", r.Reason(), want)
	}
}
