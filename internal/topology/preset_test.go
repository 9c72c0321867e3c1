package topology

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPresetCounts(t *testing.T) {
	tests := []struct {
		preset   string
		gpus     int
		nodes    int
		switches []Count
		domains  []Count
	}{
		{"ndv5", 8, 1, []Count{{"leaf", 8}}, []Count{{"leaf", 1}, {"cluster", 1}}},
		{"ndv5", 256, 32, []Count{{"leaf", 8}}, []Count{{"leaf", 1}, {"cluster", 1}}},
		// 2 leaves per rail, 32 ports up each: one 64-port spine per rail.
		{"ndv5", 512, 64, []Count{{"leaf", 16}, {"spine", 8}}, []Count{{"leaf", 2}, {"cluster", 1}}},
		// 512 leaves per rail: blocks of 32 leaves with 32 spines each per
		// rail, 16384 ports per rail into 256 64-port cores.
		{"ndv5", 131072, 16384, []Count{{"leaf", 4096}, {"spine", 4096}, {"core", 2048}},
			[]Count{{"leaf", 512}, {"block", 16}, {"cluster", 1}}},
		{"gb200-nvl72", 144, 36, []Count{{"leaf", 8}, {"spine", 4}}, []Count{{"leaf", 2}, {"cluster", 1}}},
	}
	for _, tc := range tests {
		f, err := Generate(tc.preset, tc.gpus)
		if err != nil {
			t.Fatalf("%s/%d: %v", tc.preset, tc.gpus, err)
		}
		s := f.Summarize()
		if s.GPUs != tc.gpus || s.Nodes != tc.nodes {
			t.Errorf("%s/%d: got %d GPUs on %d nodes", tc.preset, tc.gpus, s.GPUs, s.Nodes)
		}
		if d := cmp.Diff(tc.switches, s.Levels); d != "" {
			t.Errorf("%s/%d switches (-want +got):\n%s", tc.preset, tc.gpus, d)
		}
		if d := cmp.Diff(tc.domains, s.Domains); d != "" {
			t.Errorf("%s/%d domains (-want +got):\n%s", tc.preset, tc.gpus, d)
		}
		if s.BisectionGbps == nil || *s.BisectionGbps != s.InjectionGbps/2 {
			t.Errorf("%s/%d: non-blocking tree should bisect at half injection %v, got %v", tc.preset, tc.gpus, s.InjectionGbps/2, s.BisectionGbps)
		}
		for _, r := range s.Oversubscription {
			if r.Ratio != 1 {
				t.Errorf("%s/%d: oversubscription %v at %s", tc.preset, tc.gpus, r.Ratio, r.Name)
			}
		}
	}
}

func TestNativeRoundTrip(t *testing.T) {
	for _, p := range PresetNames() {
		f, err := Generate(p, 2304)
		if err != nil {
			t.Fatal(err)
		}
		var a bytes.Buffer
		if err := f.WriteYAML(&a); err != nil {
			t.Fatal(err)
		}
		g, format, err := Parse("a.yaml", a.Bytes(), FormatAuto)
		if err != nil {
			t.Fatalf("%s: %v\n%s", p, err, a.String())
		}
		if format != FormatNative {
			t.Errorf("detected %s", format)
		}
		var b bytes.Buffer
		if err := g.WriteYAML(&b); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(a.String(), b.String()); d != "" {
			t.Errorf("%s: round trip changed the document (-first +second):\n%s", p, d)
		}
		if d := cmp.Diff(f.Summarize(), g.Summarize()); d != "" {
			t.Errorf("%s: summary changed (-first +second):\n%s", p, d)
		}
	}
}
