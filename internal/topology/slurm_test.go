package topology

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// slurmSharedDir holds the GPL Slurm examples, which stay out of testdata.
const slurmSharedDir = "../../../shared/topologies"

// slurmSharedFile returns the path of a file of ../shared, skipping the test
// when the directory is not there (a fresh clone).
func slurmSharedFile(tb testing.TB, name string) string {
	tb.Helper()
	p := filepath.Join(slurmSharedDir, name)
	if _, err := os.Stat(p); err != nil {
		tb.Skipf("%s is absent (GPL Slurm examples are read from /work/shared, not copied): %v", p, err)
	}
	return p
}

// slurmShape is the part of a summary the loader tests compare.
type slurmShape struct {
	Nodes, GPUs, Switches int
	Levels, Domains       []Count
	NVLinkDomains         int
	MaxNVLinkGPUs         int
	Warnings              int
}

func slurmShapeOf(f *Fabric) slurmShape {
	s := f.Summarize()
	return slurmShape{Nodes: s.Nodes, GPUs: s.GPUs, Switches: s.Switches, Levels: s.Levels, Domains: s.Domains,
		NVLinkDomains: s.NVLinkDomains, MaxNVLinkGPUs: s.MaxNVLinkGPUs, Warnings: len(s.Warnings)}
}

func slurmCounts(kv ...any) []Count {
	var c []Count
	for i := 0; i+1 < len(kv); i += 2 {
		c = append(c, Count{Name: kv[i].(string), Count: kv[i+1].(int)})
	}
	return c
}

// TestSlurmRealFiles loads the real topology files and the seed files with
// the default node class (8 GPUs a node) and compares what the summary
// counts with what the files describe.
func TestSlurmRealFiles(t *testing.T) {
	tests := []struct {
		file   string
		shared bool
		format Format
		want   slurmShape
	}{
		{"slurm-testsuite-tree-large.topology.conf", true, FormatSlurm, slurmShape{
			Nodes: 10000, GPUs: 80000, Switches: 529,
			Levels:        slurmCounts("leaf", 500, "spine", 26, "core", 2, "tier4", 1),
			Domains:       slurmCounts("leaf", 500, "block", 26, "pod", 2, "cluster", 1),
			NVLinkDomains: 10000, MaxNVLinkGPUs: 8}},
		{"slurm-testsuite-tree-small.topology.conf", true, FormatSlurm, slurmShape{
			Nodes: 400, GPUs: 3200, Switches: 23,
			Levels:        slurmCounts("leaf", 20, "spine", 2, "core", 1),
			Domains:       slurmCounts("leaf", 20, "block", 2, "cluster", 1),
			NVLinkDomains: 400, MaxNVLinkGPUs: 8}},
		// Three examples in one file: the tree loads, the blocks name
		// nodes outside it, the rings are not modelled.
		{"slurm-manpage-examples.topology.conf", true, FormatSlurm, slurmShape{
			Nodes: 18, GPUs: 144, Switches: 4,
			Levels:        slurmCounts("leaf", 3, "spine", 1),
			Domains:       slurmCounts("leaf", 3, "cluster", 1),
			NVLinkDomains: 18, MaxNVLinkGPUs: 8, Warnings: 2}},
		// topo1 (tree) is the cluster default; topo2..topo5 are skipped.
		{"slurm-manpage-example.topology.yaml", true, FormatSlurmYAML, slurmShape{
			Nodes: 4, GPUs: 32, Switches: 3,
			Levels:        slurmCounts("leaf", 2, "spine", 1),
			Domains:       slurmCounts("leaf", 2, "cluster", 1),
			NVLinkDomains: 4, MaxNVLinkGPUs: 8, Warnings: 5}},
		{"topograph-expected-tree-and-block.topology.conf", false, FormatSlurm, slurmShape{
			Nodes: 96, GPUs: 768, Switches: 19,
			Levels:        slurmCounts("leaf", 12, "spine", 6, "core", 1),
			Domains:       slurmCounts("leaf", 12, "block", 6, "cluster", 1),
			NVLinkDomains: 96, MaxNVLinkGPUs: 8}},
		// Blocks only: one leaf and one NVLink domain per block.
		{"topograph-expected-block.topology.conf", false, FormatSlurm, slurmShape{
			Nodes: 96, GPUs: 768, Switches: 0,
			Domains:       slurmCounts("leaf", 12, "cluster", 1),
			NVLinkDomains: 12, MaxNVLinkGPUs: 64}},
		{"slurm-tree-4tier.conf", false, FormatSlurm, slurmShape{
			Nodes: 32, GPUs: 256, Switches: 15,
			Levels:        slurmCounts("leaf", 8, "spine", 4, "core", 2, "tier4", 1),
			Domains:       slurmCounts("leaf", 8, "block", 4, "pod", 2, "cluster", 1),
			NVLinkDomains: 32, MaxNVLinkGPUs: 8}},
		{"slurm-tree-and-block.conf", false, FormatSlurm, slurmShape{
			Nodes: 16, GPUs: 128, Switches: 3,
			Levels:        slurmCounts("leaf", 2, "spine", 1),
			Domains:       slurmCounts("leaf", 2, "cluster", 1),
			NVLinkDomains: 4, MaxNVLinkGPUs: 32}},
		// Two trees under a logical cluster; the empty switch is dropped.
		{"slurm-forest.conf", false, FormatSlurm, slurmShape{
			Nodes: 8, GPUs: 64, Switches: 4,
			Levels:        slurmCounts("leaf", 3, "spine", 1),
			Domains:       slurmCounts("leaf", 3, "block", 1, "cluster", 1),
			NVLinkDomains: 8, MaxNVLinkGPUs: 8, Warnings: 1}},
		{"slurm-block.conf", false, FormatSlurm, slurmShape{
			Nodes: 54, GPUs: 432,
			Domains:       slurmCounts("leaf", 3, "cluster", 1),
			NVLinkDomains: 3, MaxNVLinkGPUs: 144}},
		{"slurm-topology.yaml", false, FormatSlurmYAML, slurmShape{
			Nodes: 16, GPUs: 128, Switches: 7,
			Levels:        slurmCounts("leaf", 4, "spine", 2, "core", 1),
			Domains:       slurmCounts("leaf", 4, "block", 2, "cluster", 1),
			NVLinkDomains: 16, MaxNVLinkGPUs: 8, Warnings: 4}},
		// The cluster default is flat: skipped with a warning, and the
		// block topology loads instead.
		{"slurm-topology-block.yaml", false, FormatSlurmYAML, slurmShape{
			Nodes: 6, GPUs: 48,
			Domains:       slurmCounts("leaf", 3, "cluster", 1),
			NVLinkDomains: 3, MaxNVLinkGPUs: 16, Warnings: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			if tc.shared {
				path = slurmSharedFile(t, tc.file)
			}
			f, format, err := LoadFile(path, FormatAuto)
			if err != nil {
				t.Fatal(err)
			}
			if format != tc.format {
				t.Errorf("detected %s, want %s", format, tc.format)
			}
			got := slurmShapeOf(f)
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("summary (-want +got):\n%s\nwarnings: %q", d, f.Warnings)
			}
		})
	}
}

// TestSlurmLargeTreeShape follows one node of Slurm's large test tree up to
// the root, through the switches the file names.
func TestSlurmLargeTreeShape(t *testing.T) {
	f, _, err := LoadFile(slurmSharedFile(t, "slurm-testsuite-tree-large.topology.conf"), FormatSlurm)
	if err != nil {
		t.Fatal(err)
	}
	n, ok := f.NodeByName("peta19959")
	if !ok {
		t.Fatal("peta19959 missing")
	}
	var path []string
	for d := f.Nodes[n].Leaf; d != NoDomain; d = f.Domains[d].Parent {
		path = append(path, f.Domains[d].Name+"/"+f.Domains[d].Level.String())
	}
	want := []string{"leaf597/leaf", "grp35/block", "im1/pod", "root/cluster"}
	if d := cmp.Diff(want, path); d != "" {
		t.Errorf("path of peta19959 (-want +got):\n%s", d)
	}
	if got := len(f.LeafNodes(f.Nodes[n].Leaf)); got != 20 {
		t.Errorf("leaf597 holds %d nodes, want 20", got)
	}
}

// TestSlurmTreeAndBlock checks that blocks under one leaf become NVLink
// domains of the trays they name, and that the node class is a parameter.
func TestSlurmTreeAndBlock(t *testing.T) {
	data, err := os.ReadFile("testdata/slurm-tree-and-block.conf")
	if err != nil {
		t.Fatal(err)
	}
	tray := NodeClass{Name: "gb200-tray", GPUModel: "B200", GPUs: 4}
	f, err := ParseSlurmConf("tb.conf", data, SlurmOptions{NodeClass: tray})
	if err != nil {
		t.Fatal(err)
	}
	s := f.Summarize()
	if s.GPUs != 64 || s.MaxNVLinkGPUs != 16 || s.GPUModels["B200"] != 64 {
		t.Errorf("got %d GPUs, NVLink domains of %d GPUs, models %v; want 64, 16, B200:64", s.GPUs, s.MaxNVLinkGPUs, s.GPUModels)
	}
	got := map[string]string{}
	for _, nv := range f.NVLinks {
		if len(nv.Nodes) > 1 {
			got[nv.Name] = f.Nodes[nv.Nodes[0]].Name + ".." + f.Nodes[nv.Nodes[len(nv.Nodes)-1]].Name
		}
	}
	want := map[string]string{"rack1": "tray01..tray04", "rack2": "tray05..tray08", "rack3": "tray09..tray12", "rack4": "tray13..tray16"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("NVLink domains (-want +got):\n%s", d)
	}

	// A block across two leaves cannot be an NVLink domain of the model:
	// it is set aside with a warning, and the rest still loads.
	spanning := strings.Replace(string(data), "BlockName=rack2 Nodes=tray[05-08]", "BlockName=rack2 Nodes=tray[07-10]", 1)
	spanning = strings.Replace(spanning, "BlockName=rack3 Nodes=tray[09-12]", "BlockName=rack3 Nodes=tray[05-06],tray[11-12]", 1)
	f, err = ParseSlurmConf("tb.conf", []byte(spanning), SlurmOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Warnings) != 1 || !strings.Contains(f.Warnings[0], "2 block(s) span more than one leaf switch") ||
		!strings.Contains(f.Warnings[0], "rack2, rack3") {
		t.Errorf("warnings %q", f.Warnings)
	}
	if s := f.Summarize(); s.NVLinkDomains != 2+8 {
		t.Errorf("%d NVLink domains, want 2 racks and 8 single trays", s.NVLinkDomains)
	}
}

// TestSlurmLinkSpeed checks that LinkSpeed becomes the uplink of each switch
// domain, so the summary shows the relative oversubscription per level.
func TestSlurmLinkSpeed(t *testing.T) {
	f, _, err := LoadFile("testdata/slurm-tree-4tier.conf", FormatSlurm)
	if err != nil {
		t.Fatal(err)
	}
	s := f.Summarize()
	want := []Ratio{{"block", 2}, {"pod", 1}}
	if d := cmp.Diff(want, s.Oversubscription); d != "" {
		t.Errorf("oversubscription (-want +got):\n%s", d)
	}
	if s.BisectionGbps != nil {
		t.Errorf("bisection %v without any node bandwidth", *s.BisectionGbps)
	}
	d, _ := f.DomainByName("pod1")
	if got := f.Domains[d]; got.UplinkGbps != 8 || got.Switches != 1 || !cmp.Equal(got.SwitchNames, []string{"pod1"}) {
		t.Errorf("pod1 = %+v", got)
	}
}

// TestSlurmSyntaxVariants checks that spellings Slurm's parser accepts give
// the same fabric as the plain form.
func TestSlurmSyntaxVariants(t *testing.T) {
	plain := "SwitchName=s0 Nodes=n[0-3]\nSwitchName=s1 Nodes=n[4-7]\nSwitchName=top Switches=s[0-1]\n"
	variants := map[string]string{
		"crlf":         strings.ReplaceAll(plain, "\n", "\r\n"),
		"no final eol": strings.TrimSuffix(plain, "\n"),
		"lower case":   strings.ToLower(plain[:0]) + "switchname=s0 nodes=n[0-3]\nSWITCHNAME=s1 NODES=n[4-7]\nswitchName=top sWitches=s[0-1]\n",
		"spaces":       "  SwitchName = s0   Nodes = n[0-3]\n\tSwitchName=s1\tNodes=n[4-7]\nSwitchName=top Switches=s[0-1]   \n",
		"quotes":       "SwitchName=\"s0\" Nodes=\"n[0-1], n[2-3]\"\nSwitchName=s1 Nodes=n[4-7]\nSwitchName=top Switches=\"s0,s1\"\n",
		"continuation": "SwitchName=s0 \\\n Nodes=n[0-3]\nSwitchName=s1 Nodes=n[4-7]\\\n\nSwitchName=top Switches=s[0-1]\n",
		"comments":     "# header\nSwitchName=s0 Nodes=n[0-3] # first\n\n   # indented\nSwitchName=s1 Nodes=n[4-7]#x\nSwitchName=top Switches=s[0-1]\n",
		"order":        "SwitchName=top Switches=s[0-1]\nSwitchName=s1 Nodes=n[4-7]\nSwitchName=s0 Nodes=n[0-3]\n",
	}
	want, err := ParseSlurmConf("a.conf", []byte(plain), SlurmOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range variants {
		got, err := ParseSlurmConf("a.conf", []byte(v), SlurmOptions{})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if d := cmp.Diff(want.Summarize(), got.Summarize()); d != "" {
			t.Errorf("%s: summary (-plain +variant):\n%s", name, d)
		}
		for _, n := range []string{"n0", "n3", "n4", "n7"} {
			id, ok := got.NodeByName(n)
			wid, _ := want.NodeByName(n)
			if !ok || got.Domains[got.Nodes[id].Leaf].Name != want.Domains[want.Nodes[wid].Leaf].Name {
				t.Errorf("%s: node %s misplaced", name, n)
			}
		}
	}
}

// slurmConfBad lists broken topology.conf files with the error each must
// give: the file, the line of the offending statement, what was expected.
// The fuzz targets use the inputs as seeds.
var slurmConfBad = []struct {
	name, in, want string
}{
	{"empty", "", "x.conf: file is empty"},
	{"blank", " \n\t\n", "x.conf: file is empty"},
	{"comments only", "# nothing\n#\n", "x.conf: no SwitchName= or BlockName= lines"},
	{"binary", "SwitchName=s0 Nodes=n1\n\x00\x01\x02\x03", "x.conf:2: binary data (NUL byte)"},
	{"not utf-8", "SwitchName=s0 Nodes=n1\nSwitchName=s1 Nodes=\xff\xfe\n", "x.conf:2: invalid UTF-8"},
	{"truncated hostlist", "SwitchName=s1 Nodes=n[0-3]\nSwitchName=s0 Nodes=n[4-", `x.conf:2: switch "s0": Nodes=: hostlist "n[4-": '[' without ']'`},
	{"truncated tree", "SwitchName=top Switches=s[0-1]\nSwitchName=s0 Nodes=n[0-3]\n", `x.conf:1: switch "top" lists child switch "s1", which is never defined`},
	{"truncated continuation", "SwitchName=s0 Nodes=n1\nSwitchName=s1 \\\n", `x.conf:2: file ends after a '\' continuation`},
	{"node under two leaves", "SwitchName=s0 Nodes=n[0-3]\nSwitchName=s1 Nodes=n[3-7]\n", `x.conf:2: node "n3" is under both leaf switches "s0" (line 1) and "s1"`},
	{"node twice on a leaf", "SwitchName=s0 Nodes=n[0-3],n2\n", `x.conf:1: switch "s0" lists node "n2" twice`},
	{"loop", "SwitchName=c Nodes=n1\nSwitchName=a Switches=b\nSwitchName=b Switches=a\n", `x.conf:2: switch loop a -> b -> a`},
	{"longer loop", "SwitchName=a Switches=b\nSwitchName=b Switches=c\nSwitchName=c Switches=a,leaf\nSwitchName=leaf Nodes=n1\n", `x.conf:1: switch loop`},
	{"self child", "SwitchName=a Switches=a\n", `x.conf:1: switch "a" lists itself as a child (Switches=)`},
	{"descending range", "SwitchName=s0 Nodes=n[5-2]\n", `x.conf:1: switch "s0": Nodes=: hostlist "n[5-2]": range 5-2 counts down`},
	{"two parents", "SwitchName=p1 Switches=s0\nSwitchName=p2 Switches=s0\nSwitchName=s0 Nodes=n1\n", `x.conf:2: switch "s0" is listed under both "p1" (line 1) and "p2"`},
	{"child twice", "SwitchName=p Switches=s0,s0\nSwitchName=s0 Nodes=n1\n", `x.conf:1: switch "p" lists child switch "s0" twice`},
	{"unknown key", "SwitchName=s0 Nodes=n1 Speed=100\n", `x.conf:1: SwitchName=s0: unknown key "Speed": expected Switches=, Nodes= or LinkSpeed=`},
	{"unknown block key", "BlockName=b Nodes=n1 Switches=s\n", `x.conf:1: BlockName=b: unknown key "Switches": expected Nodes=`},
	{"unknown statement", "SwitchName=s0 Nodes=n1\nNodeName=n1 Gres=gpu:8\n", `x.conf:2: unknown statement NodeName=: expected SwitchName=, BlockName=, BlockSizes= or RingName=`},
	{"key first", "Nodes=n1 SwitchName=s0\n", `x.conf:1: unknown statement Nodes=`},
	{"not key=value", "SwitchName=s0 Nodes n1\n", `x.conf:1: expected KEY=VALUE, got "Nodes"`},
	{"bare word", "hello\n", `x.conf:1: expected KEY=VALUE, got "hello"`},
	{"no value", "SwitchName=s0 Nodes=\n", `x.conf:1: Nodes= has no value`},
	{"open quote", "SwitchName=s0 Nodes=\"n[1-2]\n", `x.conf:1: Nodes=: quoted value without a closing '"'`},
	{"include", "Include /etc/slurm/topo2.conf\n", `x.conf:1: Include is not supported`},
	{"key twice", "SwitchName=s0 Nodes=n1 nodes=n2\n", `x.conf:1: nodes= given twice`},
	{"nodes on a non-leaf", "SwitchName=s0 Nodes=n1 Switches=s1\nSwitchName=s1 Nodes=n2\n", `x.conf:1: switch "s0" has both Switches= and Nodes=`},
	{"switch twice", "SwitchName=s0 Nodes=n1\nSwitchName=s0 Nodes=n2\n", `x.conf:2: switch "s0" defined twice (first on line 1)`},
	{"undefined child", "SwitchName=s0 Nodes=n1\nSwitchName=top Switches=s[0-1]\n", `x.conf:2: switch "top" lists child switch "s1", which is never defined (expected a SwitchName=s1 line)`},
	{"bad switch name", "SwitchName=s[0-1] Nodes=n1\n", `x.conf:1: switch name "s[0-1]" holds hostlist syntax`},
	{"long switch name", "SwitchName=" + strings.Repeat("s", 65) + " Nodes=n1\n", `x.conf:1: switch name "sss`},
	{"bad link speed", "SwitchName=s0 Nodes=n1 LinkSpeed=fast\n", `x.conf:1: LinkSpeed=fast: expected a whole number`},
	{"negative link speed", "SwitchName=s0 Nodes=n1 LinkSpeed=-1\n", `x.conf:1: LinkSpeed=-1: expected a whole number`},
	{"no nodes at all", "SwitchName=top Switches=a\nSwitchName=a\n", `x.conf: no switch has nodes below it`},
	{"huge hostlist", "SwitchName=s0 Nodes=n[0-99999999]\n", `x.conf:1: switch "s0": Nodes=: hostlist "n[0-99999999]": more than`},
	{"too many names in all", slurmManyBlocks(3, 100000), `x.conf:3: block "b2": Nodes=: the file names more than 262144 nodes and switches`},
	{"five tiers", "SwitchName=t4 Switches=t3\nSwitchName=t3 Switches=t2\nSwitchName=t2 Switches=t1\nSwitchName=t1 Switches=t0\nSwitchName=t0 Nodes=n1\n",
		`x.conf:1: the tree under "t4" has 5 switch tiers: at most 4 are modelled (leaf, block, pod, cluster)`},
	{"four tiers in a forest", "SwitchName=t3 Switches=t2\nSwitchName=t2 Switches=t1\nSwitchName=t1 Switches=t0\nSwitchName=t0 Nodes=n1\nSwitchName=other Nodes=n2\n",
		`x.conf:1: the tree has more switch tiers than modelled: "t3" is 3 tiers above the leaves`},
	{"block sizes not powers of two", "BlockName=b1 Nodes=n[1-32]\nBlockSizes=30,100\n", `x.conf:2: BlockSizes=30,100: size 100 is not the base size 30 times a power of two`},
	{"block sizes not numbers", "BlockName=b1 Nodes=n[1-32]\nBlockSizes=8,x\n", `x.conf:2: BlockSizes=8,x: "x" is not a positive whole number`},
	{"block sizes shrink", "BlockName=b1 Nodes=n[1-32]\nBlockSizes=16,8\n", `x.conf:2: BlockSizes=16,8: size 8 is not the base size 16 times a power of two`},
	{"block sizes twice", "BlockName=b1 Nodes=n[1-32]\nBlockSizes=16\nBlockSizes=16\n", `x.conf:3: BlockSizes= given twice (first on line 2)`},
	{"block below base size", "BlockName=b1 Nodes=n[1-8]\nBlockName=b2 Nodes=n[9-12]\nBlockSizes=8\n", `x.conf:2: block "b2" has 4 nodes, fewer than the base block size 8`},
	{"block below first block", "BlockName=b1 Nodes=n[1-8]\nBlockName=b2 Nodes=n[9-12]\n", `x.conf:2: block "b2" has 4 nodes, fewer than the base block size 8`},
	{"node in two blocks", "BlockName=b1 Nodes=n[1-4]\nBlockName=b2 Nodes=n[4-7]\n", `x.conf:2: node "n4" is in both blocks "b1" (line 1) and "b2"`},
	{"block twice", "BlockName=b1 Nodes=n[1-4]\nBlockName=b1 Nodes=n[5-8]\n", `x.conf:2: block "b1" defined twice (first on line 1)`},
	{"block without nodes", "BlockName=b1\n", `x.conf:1: block "b1" has no Nodes=`},
	{"only rings", "RingName=r0 Nodes=n[1-8]\n", `x.conf: only RingName= lines (topology/ring): rings are not modelled`},
	{"only block sizes", "# sizes\nBlockSizes=8\n", `x.conf:2: BlockSizes= without any BlockName= line`},
	{"block sizes with more", "BlockName=b1 Nodes=n[1-4]\nBlockSizes=4 Nodes=n1\n", `x.conf:2: BlockSizes= stands alone on its line`},
}

// slurmManyBlocks writes n blocks of size nodes each.
func slurmManyBlocks(n, size int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "BlockName=b%d Nodes=b%dn[0-%d]\n", i, i, size-1)
	}
	return b.String()
}

func TestSlurmConfErrors(t *testing.T) {
	for _, tc := range slurmConfBad {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseSlurmConf("x.conf", []byte(tc.in), SlurmOptions{})
			if err == nil {
				t.Fatalf("no error; loaded %+v", f.Summarize())
			}
			var e *Error
			if !errors.As(err, &e) || e.File != "x.conf" {
				t.Errorf("error %T %v does not name the file", err, err)
			}
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("error %q\nwant prefix %q", err, tc.want)
			}
		})
	}
}

// TestSlurmNodeClass checks the node class parameter: the default through
// Parse, a given class through ParseSlurmConf, and a bad class refused.
func TestSlurmNodeClass(t *testing.T) {
	in := []byte("SwitchName=s0 Nodes=n[0-9]\n")
	f, _, err := Parse("a.conf", in, FormatAuto)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]NodeClass{DefaultSlurmNodeClass}, f.Classes); d != "" {
		t.Errorf("default class (-want +got):\n%s", d)
	}
	h100 := NodeClass{Name: "h100", GPUModel: "H100-80GB", GPUs: 8, Rails: 8, RailGbps: 400}
	f, err = ParseSlurmConf("a.conf", in, SlurmOptions{NodeClass: h100})
	if err != nil {
		t.Fatal(err)
	}
	if s := f.Summarize(); s.GPUModels["H100-80GB"] != 80 || s.InjectionGbps != 10*8*400 {
		t.Errorf("summary %+v", s)
	}
	f, err = ParseSlurmConf("a.conf", in, SlurmOptions{NodeClass: NodeClass{GPUModel: "L40S", GPUs: 4}})
	if err != nil || f.Classes[0].Name != "slurm-node" || f.NumGPUs() != 40 {
		t.Errorf("unnamed class: %v, %+v", err, f.Classes)
	}
	_, err = ParseSlurmConf("a.conf", in, SlurmOptions{NodeClass: NodeClass{Name: "none", GPUs: 0, GPUModel: "x"}})
	if err == nil || !strings.Contains(err.Error(), "gpus must be between 1 and 64") {
		t.Errorf("bad class: %v", err)
	}
}

// TestSlurmLevelsByHeight checks the level mapping on trees of every height
// the model holds, with and without a single root.
func TestSlurmLevelsByHeight(t *testing.T) {
	tests := []struct {
		in      string
		domains []Count
	}{
		{"SwitchName=l Nodes=n1\n", slurmCounts("leaf", 1, "cluster", 1)},
		{"SwitchName=a Nodes=n1\nSwitchName=b Nodes=n2\n", slurmCounts("leaf", 2, "cluster", 1)},
		{"SwitchName=r Switches=l\nSwitchName=l Nodes=n1\n", slurmCounts("leaf", 1, "cluster", 1)},
		{"SwitchName=r Switches=s\nSwitchName=s Switches=l\nSwitchName=l Nodes=n1\n", slurmCounts("leaf", 1, "block", 1, "cluster", 1)},
		{"SwitchName=r Switches=p\nSwitchName=p Switches=s\nSwitchName=s Switches=l\nSwitchName=l Nodes=n1\n", slurmCounts("leaf", 1, "block", 1, "pod", 1, "cluster", 1)},
		// Unbalanced: a leaf straight under a three-tier root.
		{"SwitchName=r Switches=s,l2\nSwitchName=s Switches=l\nSwitchName=l Nodes=n1\nSwitchName=l2 Nodes=n2\n", slurmCounts("leaf", 2, "block", 1, "cluster", 1)},
		// Two roots of three tiers under a logical cluster.
		{"SwitchName=a Switches=a1\nSwitchName=a1 Switches=a2\nSwitchName=a2 Nodes=n1\nSwitchName=b Nodes=n2\n", slurmCounts("leaf", 2, "block", 1, "pod", 1, "cluster", 1)},
	}
	for _, tc := range tests {
		f, err := ParseSlurmConf("h.conf", []byte(tc.in), SlurmOptions{})
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		s := f.Summarize()
		if d := cmp.Diff(tc.domains, s.Domains); d != "" {
			t.Errorf("%q: domains (-want +got):\n%s", tc.in, d)
		}
		if s.Switches != strings.Count(tc.in, "SwitchName=") {
			t.Errorf("%q: %d switches", tc.in, s.Switches)
		}
	}
	// A switch named like the logical cluster does not clash with it.
	f, err := ParseSlurmConf("c.conf", []byte("SwitchName=cluster Nodes=n1\nSwitchName=b Nodes=n2\n"), SlurmOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := f.Roots(); len(r) != 1 || f.Domains[r[0]].Name != "cluster-1" || f.Domains[r[0]].Switches != 0 {
		t.Errorf("roots %v", r)
	}
}

// BenchmarkLoadSlurmLarge parses Slurm's large test tree (529 switches,
// 10,000 nodes).
func BenchmarkLoadSlurmLarge(b *testing.B) {
	data, err := os.ReadFile(slurmSharedFile(b, "slurm-testsuite-tree-large.topology.conf"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseSlurmConf("large.conf", data, SlurmOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
