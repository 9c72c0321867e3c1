//go:build cgo

package agent_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"gpucloud/internal/agent"
	"gpucloud/internal/agent/gpu"
	"gpucloud/internal/api"
)

// TestAgentRegistersNVMLGPUs runs an agent in-process on go-nvml's DGX
// H100 mock against a real server: the node registers 8 real (not
// emulated) H100s with their NVML UUIDs, and a GPU whose NVML calls start
// failing (the GPU is lost) shows up as unhealthy on the node.
func TestAgentRegistersNVMLGPUs(t *testing.T) {
	c := startCluster(t, false, nil)
	m := dgxh100.New()
	var lost atomic.Bool
	for i, d := range m.Devices {
		sd := d.(*server.Device)
		sd.GetNvLinkStateFunc = func(link int) (nvml.EnableState, nvml.Return) {
			if link >= 18 {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return nvml.FEATURE_ENABLED, nvml.SUCCESS
		}
		sd.GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) { return 0, nvml.SUCCESS }
		sd.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) { return 0, 0, false, false, nvml.SUCCESS }
		if i == 5 {
			mem := sd.GetMemoryInfoFunc
			sd.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
				if lost.Load() {
					return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST
				}
				return mem()
			}
		}
	}
	m.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { return nil, nvml.ERROR_NOT_SUPPORTED }
	src, err := gpu.OpenNVML(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a, err := agent.New(agent.Config{
		Servers: []string{c.serverURL}, Token: c.agentTok, NodeName: "dgx-1", Address: "127.0.0.9",
		DataDir: dir, GPUs: src, IBRoot: filepath.Join(dir, "no-ib"), HealthInterval: 100 * time.Millisecond,
		Shim: []string{c.bin, "agent", "shim"}, Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	var n *api.Node
	waitFor(t, 30*time.Second, "dgx-1 to register", func() bool {
		n, err = c.admin.Node(ctx, "dgx-1")
		return err == nil && n.Status.Phase == api.NodeReady
	})
	gpus := n.Status.Inventory.GPUs
	if len(gpus) != 8 {
		t.Fatalf("%d GPUs registered, want 8", len(gpus))
	}
	for i, g := range gpus {
		want, _ := m.Devices[i].GetUUID()
		if g.UUID != want || g.Model != "NVIDIA H100 80GB HBM3" || g.MemoryMiB != 81920 || g.Emulated {
			t.Errorf("GPU %d registered as %+v, want NVML's %s", i, g, want)
		}
	}
	lost.Store(true)
	waitFor(t, 30*time.Second, "GPU 5 reported unhealthy", func() bool {
		n, err = c.admin.Node(ctx, "dgx-1")
		return err == nil && len(n.Status.Unhealthy) == 1 && n.Status.Unhealthy[0] == 5
	})
}
