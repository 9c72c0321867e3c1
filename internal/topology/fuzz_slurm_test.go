package topology

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// slurmAddSeedFiles adds the testdata files matching the patterns to the corpus.
func slurmAddSeedFiles(f *testing.F, patterns ...string) {
	for _, p := range patterns {
		files, err := filepath.Glob(filepath.Join("testdata", p))
		if err != nil {
			f.Fatal(err)
		}
		if len(files) == 0 {
			f.Fatalf("no seed files match %s", p)
		}
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
}

// FuzzSlurmConf: no input makes the topology.conf parser panic, every
// refusal is an *Error with a line inside the file, and every fabric it
// accepts is consistent and survives the native format.
func FuzzSlurmConf(f *testing.F) {
	slurmAddSeedFiles(f, "slurm*.conf", "topograph*.conf")
	for _, tc := range slurmConfBad {
		// Inputs that expand to the cap of names are slow under coverage
		// instrumentation; the unit test covers them.
		if !strings.Contains(tc.want, "more than") {
			f.Add([]byte(tc.in))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fab, err := ParseSlurmConf("fuzz.conf", data, SlurmOptions{})
		checkSlurmResult(t, data, fab, err)
	})
}

// FuzzSlurmYAML is FuzzSlurmConf for topology.yaml.
func FuzzSlurmYAML(f *testing.F) {
	slurmAddSeedFiles(f, "slurm*.yaml")
	f.Add([]byte(slurmYAMLTree))
	// Found by fuzzing: YAML counts a lone \r as a line break; an empty
	// document's null sits on the line after the file.
	f.Add([]byte("\r0"))
	f.Add([]byte("---"))
	f.Add([]byte("- topology: r\n  ring:\n    rings: []\n"))
	f.Add([]byte("- topology: b\n  block:\n    block_sizes: [4]\n    blocks:\n      - &b {block: b1, nodes: \"n[1-4]\"}\n      - *b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fab, err := ParseSlurmYAML("fuzz.yaml", data, SlurmOptions{})
		checkSlurmResult(t, data, fab, err)
	})
}

func checkSlurmResult(t *testing.T, data []byte, fab *Fabric, err error) {
	t.Helper()
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("error of type %T: %v", err, err)
		}
		// YAML also breaks lines at a lone \r and at NEL, LS and PS.
		lines := 1 + bytes.Count(data, []byte("\n")) + bytes.Count(data, []byte("\r")) +
			bytes.Count(data, []byte("\u0085")) + bytes.Count(data, []byte("\u2028")) + bytes.Count(data, []byte("\u2029"))
		if e.Line < 0 || e.Line > lines {
			t.Fatalf("error on line %d of a %d-line file: %v", e.Line, lines, err)
		}
		return
	}
	checkSlurmFabric(t, fab)
	checkRoundTrip(t, fab)
	// The native form keeps everything the summary counts.
	var out bytes.Buffer
	if err := fab.WriteYAML(&out); err != nil {
		t.Fatal(err)
	}
	back, err := parseNative("again.yaml", out.Bytes())
	if err != nil {
		t.Fatalf("native form does not parse back: %v\n%s", err, out.String())
	}
	a, b := fab.Summarize(), back.Summarize()
	a.Warnings = nil
	if d := cmp.Diff(a, b); d != "" {
		t.Fatalf("native round trip changed the summary (-slurm +native):\n%s", d)
	}
}

// checkSlurmFabric checks the invariants every loader must keep.
func checkSlurmFabric(t *testing.T, fab *Fabric) {
	t.Helper()
	s := fab.Summarize()
	gpus, switches := 0, 0
	for i := range fab.Nodes {
		gpus += fab.NodeGPUs(NodeID(i))
		if l := fab.Nodes[i].Leaf; fab.Domains[l].Level != LevelLeaf {
			t.Fatalf("node %q hangs from %s %q", fab.Nodes[i].Name, fab.Domains[l].Level, fab.Domains[l].Name)
		}
	}
	if gpus != s.GPUs || len(fab.Nodes) != s.Nodes {
		t.Fatalf("summary says %d GPUs on %d nodes; the nodes hold %d on %d", s.GPUs, s.Nodes, gpus, len(fab.Nodes))
	}
	for i, d := range fab.Domains {
		switches += d.Switches
		if d.Parent != NoDomain && fab.Domains[d.Parent].Level <= d.Level {
			t.Fatalf("domain %q (%s) under %q (%s)", d.Name, d.Level, fab.Domains[d.Parent].Name, fab.Domains[d.Parent].Level)
		}
		if d.Parent != NoDomain && int(d.Parent) >= i {
			t.Fatalf("domain %q comes before its parent", d.Name)
		}
		if d.Switches != len(d.SwitchNames) || d.Switches > 1 {
			t.Fatalf("domain %q: %d switches named %q", d.Name, d.Switches, d.SwitchNames)
		}
	}
	if switches != s.Switches {
		t.Fatalf("summary says %d switches, domains hold %d", s.Switches, switches)
	}
	if len(fab.Roots()) != 1 {
		t.Fatalf("%d roots", len(fab.Roots()))
	}
	inNVLink := 0
	for _, nv := range fab.NVLinks {
		inNVLink += len(nv.Nodes)
		for _, n := range nv.Nodes {
			if fab.Nodes[n].Leaf != fab.Nodes[nv.Nodes[0]].Leaf {
				t.Fatalf("nvlink domain %q spans leaves", nv.Name)
			}
		}
	}
	if inNVLink != len(fab.Nodes) {
		t.Fatalf("nvlink domains hold %d nodes of %d", inNVLink, len(fab.Nodes))
	}
}

// FuzzHostlist: an expression that expands compresses back to an
// expression that expands to the same names, and any list of plain names
// survives CompressHostlist then ExpandHostlist.
func FuzzHostlist(f *testing.F) {
	data, err := os.ReadFile("testdata/hostlist-seeds.txt")
	if err != nil {
		f.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		f.Add(strings.TrimSuffix(line, "\n"))
	}
	f.Add("n1 n2 n3 n10 n11 x07 x08 x9")
	f.Fuzz(func(t *testing.T, expr string) {
		names, err := ExpandHostlist(expr)
		if err == nil {
			if len(names) > maxHostlist {
				t.Fatalf("%d names, above the cap %d", len(names), maxHostlist)
			}
			short := CompressHostlist(names)
			back, err := ExpandHostlist(short)
			if err != nil {
				t.Fatalf("ExpandHostlist(%q) = %d names, compressed to %q, which fails: %v", expr, len(names), short, err)
			}
			if !cmp.Equal(names, back, hostlistSameNames) {
				t.Fatalf("ExpandHostlist(%q) then CompressHostlist gives %q, which expands differently", expr, short)
			}
		}
		// Words as names: any that hostlist syntax leaves alone must
		// round-trip.
		var plain []string
		for _, w := range strings.Fields(expr) {
			if !strings.ContainsAny(w, "[],") {
				plain = append(plain, w)
			}
		}
		short := CompressHostlist(plain)
		back, err := ExpandHostlist(short)
		if err != nil || !cmp.Equal(plain, back, hostlistSameNames) {
			t.Fatalf("CompressHostlist(%q) = %q expands to %q, %v", plain, short, back, err)
		}
	})
}
