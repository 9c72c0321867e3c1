package ib

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeHCA writes the sysfs files of one single-port HCA, as an ND H100 v5
// VM shows them.
func fakeHCA(t *testing.T, root, name, state, phys, rate, layer string) {
	t.Helper()
	dir := filepath.Join(root, name)
	port := filepath.Join(dir, "ports", "1")
	for path, body := range map[string]string{
		filepath.Join(dir, "node_guid"):   "0015:5dff:fe33:ff0c\n",
		filepath.Join(dir, "fw_ver"):      "28.39.1002\n",
		filepath.Join(dir, "board_id"):    "MT_0000000838\n",
		filepath.Join(port, "state"):      state + "\n",
		filepath.Join(port, "phys_state"): phys + "\n",
		filepath.Join(port, "rate"):       rate + "\n",
		filepath.Join(port, "link_layer"): layer + "\n",
		filepath.Join(port, "lid"):        "0x1a3\n",
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pci := filepath.Join(root, "..", "devices", "0101:00:00.0")
	os.MkdirAll(pci, 0o755)
	os.Symlink(pci, filepath.Join(dir, "device"))
}

func TestDiscover(t *testing.T) {
	root := filepath.Join(t.TempDir(), "infiniband")
	for _, n := range []string{"mlx5_0", "mlx5_1", "mlx5_2", "mlx5_10"} {
		fakeHCA(t, root, n, "4: ACTIVE", "5: LinkUp", "400 Gb/sec (4X NDR)", "InfiniBand")
	}
	fakeHCA(t, root, "mlx5_3", "1: DOWN", "3: Disabled", "10 Gb/sec (4X SDR)", "InfiniBand")
	fakeHCA(t, root, "mlx5_an0", "4: ACTIVE", "5: LinkUp", "100 Gb/sec (4X EDR)", "Ethernet")

	hcas, err := Discover(root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range hcas {
		names = append(names, h.Name)
	}
	if diff := cmp.Diff([]string{"mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3", "mlx5_10", "mlx5_an0"}, names); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
	want := HCA{
		Name: "mlx5_0", NodeGUID: "0015:5dff:fe33:ff0c", FWVersion: "28.39.1002", BoardID: "MT_0000000838", PCIBusID: "0101:00:00.0",
		Ports: []Port{{Num: 1, State: "ACTIVE", PhysState: "LinkUp", RateGbps: 400, Rate: "400 Gb/sec (4X NDR)", LinkLayer: "InfiniBand", LID: "0x1a3"}},
	}
	if diff := cmp.Diff(want, hcas[0]); diff != "" {
		t.Errorf("mlx5_0 (-want +got):\n%s", diff)
	}
	rails := Rails(hcas)
	if diff := cmp.Diff([]string{"mlx5_0", "mlx5_1", "mlx5_2", "mlx5_10"}, rails); diff != "" {
		t.Errorf("rails skip the down HCA and the Ethernet NIC (-want +got):\n%s", diff)
	}
	if got := NCCLIBHCA(rails); got != "=mlx5_0,mlx5_1,mlx5_2,mlx5_10" {
		t.Errorf("NCCL_IB_HCA %q", got)
	}
}

func TestDiscoverMissingRoot(t *testing.T) {
	hcas, err := Discover(filepath.Join(t.TempDir(), "absent"))
	if err != nil || hcas != nil {
		t.Errorf("missing root: %v %v, want no HCA and no error", hcas, err)
	}
	if NCCLIBHCA(nil) != "" {
		t.Error("NCCL_IB_HCA set without rails")
	}
}
