package topology

import (
	"os"
	"strings"
	"testing"
)

// TestParseWithNodeClass: a node class given to a format that names no
// GPUs becomes every node's hardware; the native format refuses one, and
// an NCCL topology keeps its own GPU count but takes the given model.
func TestParseWithNodeClass(t *testing.T) {
	conf := []byte("SwitchName=s0 Nodes=n[0-3]\nSwitchName=s1 Nodes=n[4-7]\nSwitchName=top Switches=s[0-1]\n")
	cls := Presets["gb200-nvl72"].Class
	for _, tc := range []struct {
		name   string
		opts   ParseOptions
		gpus   int
		models map[string]int
	}{
		{"default", ParseOptions{}, 64, map[string]int{"unknown": 64}},
		{"gb200", ParseOptions{NodeClass: cls}, 32, map[string]int{"B200-186GB": 32}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, format, err := ParseWith("t.conf", conf, FormatAuto, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if format != FormatSlurm || f.NumGPUs() != tc.gpus {
				t.Fatalf("format %s, %d GPUs; want slurm, %d", format, f.NumGPUs(), tc.gpus)
			}
			for m, n := range tc.models {
				if got := f.Summarize().GPUModels[m]; got != n {
					t.Errorf("%d GPUs of model %s, want %d (%v)", got, m, n, f.Summarize().GPUModels)
				}
			}
		})
	}
	native, err := Generate("ndv5", 64)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := native.WriteYAML(&b); err != nil {
		t.Fatal(err)
	}
	_, _, err = ParseWith("fleet.yaml", []byte(b.String()), FormatAuto, ParseOptions{NodeClass: cls})
	if err == nil || !strings.Contains(err.Error(), "fleet.yaml") || !strings.Contains(err.Error(), "names its own node classes") {
		t.Fatalf("native with a node class: %v", err)
	}
	xml, err := os.ReadFile("testdata/azure-ndv5-topo.xml")
	if err != nil {
		t.Skip(err)
	}
	f, _, err := ParseWith("ndv5.xml", xml, FormatAuto, ParseOptions{NodeClass: NodeClass{Name: "h100", GPUModel: "H100-80GB", GPUs: 8}})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Summarize().GPUModels["H100-80GB"]; got != 8 {
		t.Fatalf("NCCL topology with a class: %v", f.Summarize().GPUModels)
	}
}
