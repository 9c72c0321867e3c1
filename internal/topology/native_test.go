package topology

import (
	"bytes"
	"strings"
	"testing"
)

const nativeSmall = `apiVersion: gpucloud/v1
kind: Fabric
metadata: {name: small}
spec:
  nodeClasses:
    - {name: h100, gpuModel: H100-80GB, gpus: 8, rails: 8, railGbps: 400}
  domains:
    - {name: c, level: cluster, switches: 8}
    - name: l0
      level: leaf
      parent: c
      switches: 8
      uplinkGbps: 12800
      nodes: [{hosts: "n[0-3]", class: h100}]
    - name: l1
      level: leaf
      parent: c
      switches: 8
      uplinkGbps: 12800
      nodes: [{hosts: "n[4-7]", class: h100}]
`

func TestNativeLoads(t *testing.T) {
	f, format, err := Parse("small.yaml", []byte(nativeSmall), FormatAuto)
	if err != nil {
		t.Fatal(err)
	}
	if format != FormatNative {
		t.Errorf("format %s", format)
	}
	s := f.Summarize()
	if s.Nodes != 8 || s.GPUs != 64 || s.Switches != 24 {
		t.Errorf("got %d nodes, %d GPUs, %d switches", s.Nodes, s.GPUs, s.Switches)
	}
	if n, ok := f.NodeByName("n5"); !ok || f.Domains[f.Nodes[n].Leaf].Name != "l1" {
		t.Errorf("n5 is not under l1")
	}
}

// TestNativeErrors checks that each broken document names the file, the
// line of the domain at fault, and what was wrong.
func TestNativeErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(string) string
		want string
	}{
		{"empty", func(string) string { return "" }, "x.yaml: file is empty"},
		{"binary", func(string) string { return "\x00\x01\x02gpucloud/v1" }, "x.yaml: file is binary"},
		{"truncated", func(s string) string { return s[:strings.Index(s, "nodes: [{hosts: \"n[0-3]")+20] }, "x.yaml:14: found unexpected end of stream"},
		{"wrong kind", func(s string) string { return strings.Replace(s, "kind: Fabric", "kind: Job", 1) }, "x.yaml:1: want apiVersion gpucloud/v1 and kind Fabric"},
		{"unknown field", func(s string) string { return strings.Replace(s, "switches: 8}", "switchez: 8}", 1) }, "x.yaml:8: field switchez not found"},
		{"node under two leaves", func(s string) string { return strings.Replace(s, "n[4-7]", "n[3-7]", 1) }, `x.yaml:15: spec.domains[2]: node "n3" is under both "l0" and "l1"`},
		{"descending hostlist", func(s string) string { return strings.Replace(s, "n[4-7]", "n[5-2]", 1) }, `x.yaml:15: spec.domains[2].nodes[0].hosts: hostlist "n[5-2]": range 5-2 counts down`},
		{"unknown parent", func(s string) string {
			return strings.Replace(s, "parent: c\n      switches: 8\n      uplinkGbps: 12800\n      nodes: [{hosts: \"n[4-7]\"", "parent: x\n      switches: 8\n      uplinkGbps: 12800\n      nodes: [{hosts: \"n[4-7]\"", 1)
		}, `x.yaml:15: spec.domains[2].parent: no domain "x" defined before it`},
		{"loop", func(s string) string {
			return strings.Replace(s, "{name: c, level: cluster, switches: 8}", "{name: c, level: cluster, parent: l1, switches: 8}", 1)
		}, `x.yaml:8: spec.domains[0].parent: no domain "l1" defined before it`},
		{"unknown class", func(s string) string { return strings.Replace(s, `"n[4-7]", class: h100`, `"n[4-7]", class: a100`, 1) }, `x.yaml:15: spec.domains[2].nodes[0].class: unknown node class "a100"`},
		{"bad level", func(s string) string { return strings.Replace(s, "level: cluster", "level: galaxy", 1) }, `x.yaml:8: spec.domains[0].level: unknown level "galaxy"`},
		{"leaf above cluster", func(s string) string { return strings.Replace(s, "level: cluster", "level: leaf", 1) }, `x.yaml:9: spec.domains[1]: domain "l0" (leaf) cannot sit under "c" (leaf)`},
		{"no gpus", func(s string) string { return strings.Replace(s, "gpus: 8", "gpus: 0", 1) }, `x.yaml: node class "h100": gpus must be between 1 and 64, got 0`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse("x.yaml", []byte(tc.edit(nativeSmall)), FormatNative)
			if err == nil {
				t.Fatalf("no error")
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error %q\nwant prefix %q", err, tc.want)
			}
		})
	}
}

func TestDetect(t *testing.T) {
	tests := []struct {
		in   string
		want Format
	}{
		{nativeSmall, FormatNative},
		{"SwitchName=s0 Nodes=n[0-3]\n", FormatSlurm},
		{"# comment\nBlockName=b1 Nodes=n[0-17]\nBlockSizes=18\n", FormatSlurm},
		{"<system version=\"1\">\n<cpu/></system>", FormatNCCLXML},
		{"#\n# Topology file\nvendid=0x2c9\nSwitch\t65 \"S-1\"\n", FormatIBNetDiscover},
		{"- topology: topo1\n  cluster_default: true\n  tree:\n", FormatSlurmYAML},
	}
	for _, tc := range tests {
		got, err := Detect("f", []byte(tc.in))
		if err != nil || got != tc.want {
			t.Errorf("Detect(%.30q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	if _, err := Detect("f", []byte("hello world\n")); err == nil || !strings.Contains(err.Error(), "--format") {
		t.Errorf("unknown content: %v", err)
	}
}

// FuzzNative checks that no document makes the native parser panic, and
// that whatever it accepts survives a round trip unchanged.
func FuzzNative(f *testing.F) {
	f.Add([]byte(nativeSmall))
	g, _ := Generate("gb200-nvl72", 144)
	var buf bytes.Buffer
	_ = g.WriteYAML(&buf)
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		fab, err := parseNative("fuzz.yaml", data)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		checkRoundTrip(t, fab)
	})
}

// checkRoundTrip asserts that a parsed fabric is consistent and that its
// native form parses back to the same summary. Loader fuzz targets share it.
func checkRoundTrip(t *testing.T, fab *Fabric) {
	t.Helper()
	sum := 0
	for i := range fab.Nodes {
		sum += fab.NodeGPUs(NodeID(i))
	}
	if sum != fab.NumGPUs() {
		t.Fatalf("GPUs: nodes sum to %d, fabric says %d", sum, fab.NumGPUs())
	}
	var out bytes.Buffer
	if err := fab.WriteYAML(&out); err != nil {
		t.Fatal(err)
	}
	back, err := parseNative("again.yaml", out.Bytes())
	if err != nil {
		t.Fatalf("native form does not parse back: %v\n%s", err, out.String())
	}
	a, b := fab.Summarize(), back.Summarize()
	a.Warnings, b.Warnings = nil, nil
	if a.Nodes != b.Nodes || a.GPUs != b.GPUs || a.Switches != b.Switches || len(a.Domains) != len(b.Domains) {
		t.Fatalf("round trip changed the summary: %+v then %+v", a, b)
	}
}
