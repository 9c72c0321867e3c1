package topology

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const slurmYAMLTree = `- topology: t1
  cluster_default: true
  tree:
    switches:
      - switch: root
        children: s[1-2]
      - switch: s1
        nodes: n[1-4]
      - switch: s2
        nodes: n[5-8]
`

// TestSlurmYAMLMatchesConf checks that a tree says the same thing in both
// Slurm formats.
func TestSlurmYAMLMatchesConf(t *testing.T) {
	conf := "SwitchName=root Switches=s[1-2]\nSwitchName=s1 Nodes=n[1-4]\nSwitchName=s2 Nodes=n[5-8]\n"
	a, err := ParseSlurmConf("t.conf", []byte(conf), SlurmOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseSlurmYAML("t.yaml", []byte(slurmYAMLTree), SlurmOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(a.Summarize(), b.Summarize()); d != "" {
		t.Errorf("conf and yaml differ (-conf +yaml):\n%s", d)
	}
	if d := cmp.Diff(a.Domains, b.Domains); d != "" {
		t.Errorf("domains (-conf +yaml):\n%s", d)
	}
}

// TestSlurmYAMLChoice checks which topology loads.
func TestSlurmYAMLChoice(t *testing.T) {
	block := "- topology: b\n  block:\n    blocks:\n      - block: r1\n        nodes: n[1-2]\n      - block: r2\n        nodes: n[3-4]\n"
	flat := "- topology: f\n  cluster_default: true\n  flat: true\n"
	ring := "- topology: r\n  ring:\n    rings:\n      - ring: ring0\n        nodes: n[1-4]\n"
	notDefault := strings.Replace(slurmYAMLTree, "cluster_default: true", "cluster_default: false", 1)
	tests := []struct {
		name, in string
		domains  []Count
		warnings int
	}{
		{"default tree first", slurmYAMLTree + block, slurmCounts("leaf", 2, "cluster", 1), 1},
		{"default tree second", block + slurmYAMLTree, slurmCounts("leaf", 2, "cluster", 1), 1},
		{"no default: first tree or block", block + notDefault, slurmCounts("leaf", 2, "cluster", 1), 1},
		{"flat default falls back", flat + ring + notDefault, slurmCounts("leaf", 2, "cluster", 1), 2},
	}
	for _, tc := range tests {
		f, err := ParseSlurmYAML("c.yaml", []byte(tc.in), SlurmOptions{})
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		s := f.Summarize()
		if d := cmp.Diff(tc.domains, s.Domains); d != "" {
			t.Errorf("%s: domains (-want +got):\n%s", tc.name, d)
		}
		if len(s.Warnings) != tc.warnings {
			t.Errorf("%s: warnings %q", tc.name, s.Warnings)
		}
	}
	// Whichever loads, the tree is the one with switches and the block
	// topology is the one with NVLink domains.
	f, err := ParseSlurmYAML("c.yaml", []byte(block+notDefault), SlurmOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s := f.Summarize(); s.Switches != 0 || s.NVLinkDomains != 2 {
		t.Errorf("block topology: %+v", s)
	}
}

func TestSlurmYAMLErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "x.yaml: file is empty"},
		{"comment only", "# nothing\n", "x.yaml: file is empty"},
		{"empty document", "---\n", "x.yaml: no topologies: expected a list of topologies"},
		{"binary", slurmYAMLTree + "\x00\x01", "x.yaml:11: binary data (NUL byte)"},
		{"syntax", "- topology: [t1\n  tree:\n", "x.yaml:1: did not find expected ',' or ']'"},
		{"truncated", slurmYAMLTree[:strings.Index(slurmYAMLTree, "      - switch: s2")], `x.yaml:6: switch "root" lists child switch "s2", which is never defined (expected a switch: s2 entry)`},
		{"truncated mid-key", slurmYAMLTree[:strings.Index(slurmYAMLTree, "nodes: n[5-8]")+5], `x.yaml:10: could not find expected ':'`},
		{"truncated value", slurmYAMLTree[:strings.Index(slurmYAMLTree, "nodes: n[5-8]")+6], `x.yaml:10: nodes: expected a name or hostlist, got nothing`},
		{"not a list", "topology: t1\ntree: {}\n", "x.yaml:1: expected a list of topologies (- topology: NAME), got a mapping"},
		{"empty list", "[]\n", "x.yaml:1: the list of topologies is empty"},
		{"item not a mapping", "- t1\n", `x.yaml:1: expected a topology (topology: NAME, and one of tree, block, flat, ring, torus3d), got "t1"`},
		{"two documents", slurmYAMLTree + "---\n- topology: t2\n  flat: true\n", "x.yaml:11: a second YAML document"},
		{"unknown key", strings.Replace(slurmYAMLTree, "  cluster_default: true\n", "  cluster_default: true\n  colour: red\n", 1), `x.yaml:3: unknown key "colour": expected topology, cluster_default or one of tree, block, flat, ring, torus3d`},
		{"unknown switch key", strings.Replace(slurmYAMLTree, "nodes: n[1-4]", "nodes: n[1-4]\n        speed: 5", 1), `x.yaml:9: switch: unknown key "speed": expected switch, children, nodes or link_speed`},
		{"unknown tree key", strings.Replace(slurmYAMLTree, "    switches:", "    levels: 3\n    switches:", 1), `x.yaml:4: tree: unknown key "levels": expected switches`},
		{"key twice", strings.Replace(slurmYAMLTree, "nodes: n[1-4]", "nodes: n[1-4]\n        nodes: n[9-9]", 1), `x.yaml:9: key "nodes" given twice (first on line 8)`},
		{"two types", slurmYAMLTree + "  flat: true\n", `x.yaml:11: topology has both tree and flat: expected exactly one type`},
		{"no type", "- topology: t1\n  cluster_default: true\n", `x.yaml:1: topology "t1" has no type: expected one of tree, block, flat, ring, torus3d`},
		{"no name", "- cluster_default: true\n  flat: true\n", `x.yaml:1: topology without a name: expected topology: NAME`},
		{"name twice", slurmYAMLTree + strings.Replace(slurmYAMLTree, "cluster_default: true", "cluster_default: false", 1), `x.yaml:11: topology "t1" defined twice (first on line 1)`},
		{"bad default", strings.Replace(slurmYAMLTree, "cluster_default: true", "cluster_default: maybe", 1), `x.yaml:2: cluster_default: expected true or false, got "maybe"`},
		{"ring and torus only", "- topology: r\n  ring:\n    rings: []\n- topology: t\n  torus3d: {}\n", `x.yaml:1: no tree or block topology, only r (ring), t (torus3d): flat, ring and torus3d topologies are not modelled`},
		{"flat only", "- topology: f\n  cluster_default: true\n  flat: true\n", `x.yaml:1: no tree or block topology, only f (flat)`},
		{"tree not a mapping", "- topology: t1\n  tree: [a, b]\n", `x.yaml:2: topology "t1": tree: expected switches:, got a list`},
		{"no switches", "- topology: t1\n  tree:\n    switches: []\n", `x.yaml:2: topology "t1": tree: expected a list of switches`},
		{"switch not a mapping", "- topology: t1\n  tree:\n    switches:\n      - s1\n", `x.yaml:4: expected a switch (switch: NAME, children: or nodes:), got "s1"`},
		{"switch without name", "- topology: t1\n  tree:\n    switches:\n      - nodes: n1\n", `x.yaml:4: switch without a name: expected switch: NAME`},
		{"children and nodes", strings.Replace(slurmYAMLTree, "children: s[1-2]", "children: s[1-2]\n        nodes: n9", 1), `x.yaml:5: switch "root" has both children and nodes: only a leaf switch holds nodes`},
		{"node under two leaves", strings.Replace(slurmYAMLTree, "n[5-8]", "n[4-8]", 1), `x.yaml:10: node "n4" is under both leaf switches "s1" (line 8) and "s2"`},
		{"loop", strings.Replace(slurmYAMLTree, "nodes: n[1-4]", "children: root", 1), `x.yaml:`},
		{"two parents", strings.Replace(slurmYAMLTree, "nodes: n[1-4]", "children: s2", 1), `x.yaml:8: switch "s2" is listed under both "root" (line 5) and "s1"`},
		{"descending range", strings.Replace(slurmYAMLTree, "n[5-8]", "n[8-5]", 1), `x.yaml:10: switch "s2": nodes: hostlist "n[8-5]": range 8-5 counts down`},
		{"bad link speed", strings.Replace(slurmYAMLTree, "nodes: n[1-4]", "nodes: n[1-4]\n        link_speed: fast", 1), `x.yaml:9: link_speed: expected a whole number from 0 to 4294967295, got "fast"`},
		{"hostlist not a string", strings.Replace(slurmYAMLTree, "nodes: n[1-4]", "nodes: [n1, n2]", 1), `x.yaml:8: nodes: expected a name or hostlist, got a list`},
		{"bad block sizes", "- topology: b\n  block:\n    block_sizes: [4, 6]\n    blocks:\n      - block: b1\n        nodes: n[1-4]\n", `x.yaml:3: block_sizes: size 6 is not the base size 4 times a power of two`},
		{"block sizes not numbers", "- topology: b\n  block:\n    block_sizes: [4, x]\n    blocks:\n      - block: b1\n        nodes: n[1-4]\n", `x.yaml:3: block_sizes: "x" is not a positive whole number`},
		{"no blocks", "- topology: b\n  block:\n    block_sizes: [4]\n", `x.yaml:2: topology "b": block: expected a list of blocks`},
		{"unknown block key", "- topology: b\n  block:\n    blocks:\n      - block: b1\n        nodes: n[1-4]\n        rack: 3\n", `x.yaml:6: block: unknown key "rack": expected block or nodes`},
		{"block below base", "- topology: b\n  block:\n    block_sizes: [4]\n    blocks:\n      - block: b1\n        nodes: n[1-2]\n", `x.yaml:5: block "b1" has 2 nodes, fewer than the base block size 4`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseSlurmYAML("x.yaml", []byte(tc.in), SlurmOptions{})
			if err == nil {
				t.Fatalf("no error; loaded %+v", f.Summarize())
			}
			var e *Error
			if !errors.As(err, &e) || e.File != "x.yaml" {
				t.Errorf("error %T %v does not name the file", err, err)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error %q\nwant prefix %q", err, tc.want)
			}
		})
	}
}

// TestSlurmYAMLAliases checks that YAML anchors resolve like the text they
// stand for.
func TestSlurmYAMLAliases(t *testing.T) {
	in := `- topology: t1
  tree:
    switches:
      - switch: root
        children: &leaves s[1-2]
      - &s1 {switch: s1, nodes: "n[1-4]"}
      - switch: s2
        nodes: n[5-8]
`
	f, err := ParseSlurmYAML("a.yaml", []byte(in), SlurmOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s := f.Summarize(); s.Nodes != 8 || s.Switches != 3 {
		t.Errorf("summary %+v", s)
	}
	data, err := os.ReadFile("testdata/slurm-topology.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseSlurmYAML("b.yaml", data, SlurmOptions{NodeClass: NodeClass{Name: "x", GPUModel: "x", GPUs: 4}}); err != nil {
		t.Fatal(err)
	}
}
