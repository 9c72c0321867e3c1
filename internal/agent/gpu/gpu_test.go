package gpu

import (
	"strings"
	"testing"
)

func TestEmulated(t *testing.T) {
	e, err := NewEmulated(8, "H100-80GB", "node-a")
	if err != nil {
		t.Fatal(err)
	}
	inv, _ := e.Inventory()
	if !inv.Emulated() || inv.Model() != "H100-80GB" || len(inv.Devices) != 8 {
		t.Fatalf("inventory %+v", inv)
	}
	seen := map[string]bool{}
	for i, d := range inv.Devices {
		if !d.Emulated || d.Index != i || d.MemoryMiB != 80*1024 || seen[d.UUID] || !strings.HasPrefix(d.UUID, "GPU-emu") {
			t.Errorf("device %d = %+v", i, d)
		}
		seen[d.UUID] = true
	}
	again, _ := NewEmulated(8, "H100-80GB", "node-a")
	other, _ := NewEmulated(8, "H100-80GB", "node-b")
	a, _ := again.Inventory()
	b, _ := other.Inventory()
	if a.Devices[5].UUID != inv.Devices[5].UUID {
		t.Error("UUIDs change between runs on the same node")
	}
	if b.Devices[5].UUID == inv.Devices[5].UUID {
		t.Error("two nodes share a UUID")
	}
	// The inventory is a copy.
	inv.Devices[0].Model = "changed"
	if c, _ := e.Inventory(); c.Devices[0].Model != "H100-80GB" {
		t.Error("Inventory returned shared state")
	}
}

func TestEmulatedErrors(t *testing.T) {
	for _, tc := range []struct {
		n     int
		model string
		want  string
	}{
		{0, "H100-80GB", "--fake-gpus"},
		{65, "H100-80GB", "64"},
		{8, "", "--gpu-model"},
		{8, "H100-xGB", "memory size"},
	} {
		if _, err := NewEmulated(tc.n, tc.model, "n"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewEmulated(%d, %q): %v, want an error naming %q", tc.n, tc.model, err, tc.want)
		}
	}
	if e, err := NewEmulated(2, "A100", "n"); err != nil {
		t.Errorf("model without a size: %v", err)
	} else if inv, _ := e.Inventory(); inv.Devices[0].MemoryMiB != 0 {
		t.Errorf("model without a size: memory %d, want 0 (unknown)", inv.Devices[0].MemoryMiB)
	}
}
