package topology

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	ibSuperPOD = "testdata/ibnetdiscover-ndr-superpod-example.out"
	ibBad      = "testdata/ibnetdiscover-example-bad.out"
)

func ibReadTestdata(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// ibShape is the part of a summary the ibnetdiscover tests compare.
type ibShape struct {
	Nodes, GPUs, Switches int
	Levels, Domains       []Count
}

func ibShapeOf(s Summary) ibShape {
	return ibShape{s.Nodes, s.GPUs, s.Switches, s.Levels, s.Domains}
}

func TestIBNetDiscoverSuperPOD(t *testing.T) {
	f, format, err := Parse(ibSuperPOD, ibReadTestdata(t, ibSuperPOD), FormatAuto)
	if err != nil {
		t.Fatal(err)
	}
	if format != FormatIBNetDiscover {
		t.Errorf("detected %s", format)
	}
	s := f.Summarize()
	// The capture's README: 40 switches, 31 leaves and 9 spines. 122 host
	// names, less the UFM host and two placeholder names.
	want := ibShape{Nodes: 119, GPUs: 119 * 8, Switches: 40,
		Levels:  []Count{{"leaf", 31}, {"spine", 9}},
		Domains: []Count{{"leaf", 8}, {"cluster", 1}}}
	if d := cmp.Diff(want, ibShapeOf(s)); d != "" {
		t.Errorf("summary (-want +got):\n%s", d)
	}
	wantWarnings := []string{
		"set aside 116 CAs that are not compute hosts: 40 SHARP aggregation nodes, 69 with the firmware's default description (no host name), 2 of management hosts (B11-P1-CUFM-02), 5 of hosts with placeholder names (localhost, ubuntu)",
		"1 host has HCAs on the leaf switch of another rail (crossed cables?): b08-p1-dgx-08-c01 (HCA-5 on B09-P1-IBLEAF-04-08, the leaf of HCA-6; HCA-6 on B09-P1-IBLEAF-03-08, the leaf of HCA-5)",
	}
	if d := cmp.Diff(wantWarnings, s.Warnings); d != "" {
		t.Errorf("warnings (-want +got):\n%s", d)
	}
	if s.BisectionGbps == nil {
		t.Error("every link has a speed, yet no bisection")
	}

	cluster, _ := f.DomainByName("cluster")
	if d := f.Domains[cluster]; d.Switches != 9 || d.SwitchPorts != 64 || !strings.Contains(d.SwitchNames[0], "IBSPINE") {
		t.Errorf("cluster: %d switches of %d ports %v", d.Switches, d.SwitchPorts, d.SwitchNames)
	}
	// The node-to-leaf map: hosts and the leaf switches of their group.
	leafOf := func(host string) []string {
		n, ok := f.NodeByName(host)
		if !ok {
			t.Fatalf("no node %s", host)
		}
		return f.Domains[f.Nodes[n].Leaf].SwitchNames
	}
	for host, leaves := range map[string][]string{
		"a08-p1-dgx-04-c01": {"A09-P1-IBLEAF-01-04", "A09-P1-IBLEAF-02-04", "A09-P1-IBLEAF-03-04", "A09-P1-IBLEAF-04-04"},
		"a05-p1-dgx-01-c01": {"A09-P1-IBLEAF-01-01", "A09-P1-IBLEAF-02-01", "A09-P1-IBLEAF-04-01"},
		"b08-p1-dgx-08-c18": {"B09-P1-IBLEAF-01-08", "B09-P1-IBLEAF-02-08", "B09-P1-IBLEAF-03-08", "B09-P1-IBLEAF-04-08"},
	} {
		if d := cmp.Diff(leaves, leafOf(host)); d != "" {
			t.Errorf("%s leaves (-want +got):\n%s", host, d)
		}
	}
	for _, host := range []string{"B11-P1-CUFM-02", "localhost", "ubuntu"} {
		if _, ok := f.NodeByName(host); ok {
			t.Errorf("%s is not a compute host but became a node", host)
		}
	}
	// Rails come from the HCAs each host shows.
	for host, want := range map[string]NodeClass{
		"a08-p1-dgx-04-c01": {GPUModel: "unknown", GPUs: 8, Rails: 4, RailGbps: 400, HCAs: []string{"mlx5_0", "mlx5_1", "mlx5_4", "mlx5_5"}},
		"b05-p1-dgx-05-c01": {GPUModel: "unknown", GPUs: 8, Rails: 4, RailGbps: 400, HCAs: []string{"HCA-1", "HCA-2", "HCA-5", "HCA-6"}},
		"a05-p1-dgx-01-c01": {GPUModel: "unknown", GPUs: 8, Rails: 3, RailGbps: 400, HCAs: []string{"HCA-1", "HCA-2", "HCA-6"}},
	} {
		n, _ := f.NodeByName(host)
		got := *f.Class(n)
		got.Name = ""
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s class (-want +got):\n%s", host, d)
		}
	}
	// Each leaf domain's uplinks: 400 Gb/s per leaf-to-spine link.
	for _, d := range f.DomainsAt(LevelLeaf) {
		dom := f.Domains[d]
		if dom.UplinkGbps <= 0 || int(dom.UplinkGbps)%400 != 0 {
			t.Errorf("%s: uplink %v Gb/s, want a positive multiple of 400", dom.Name, dom.UplinkGbps)
		}
	}
}

func TestIBNetDiscoverClassOption(t *testing.T) {
	opts := IBNetDiscoverOptions{Class: NodeClass{Name: "dgx-h100", GPUModel: "H100-80GB", GPUs: 8, GPUMemoryGiB: 80,
		NVLinkGBps: 900, GPURail: []int{0, 0, 1, 1, 2, 2, 3, 3}}}
	f, err := ParseIBNetDiscover(ibSuperPOD, ibReadTestdata(t, ibSuperPOD), opts)
	if err != nil {
		t.Fatal(err)
	}
	s := f.Summarize()
	if d := cmp.Diff(map[string]int{"H100-80GB": 952}, s.GPUModels); d != "" {
		t.Errorf("models (-want +got):\n%s", d)
	}
	n, _ := f.NodeByName("a08-p1-dgx-04-c01")
	if c := f.Class(n); c.Name != "dgx-h100-4x400g-2" || c.RailOf(7) != 3 || c.NVLinkGBps != 900 {
		t.Errorf("class %+v", *c)
	}
	// Three-rail hosts cannot take a map that needs four rails.
	n, _ = f.NodeByName("a05-p1-dgx-01-c01")
	if c := f.Class(n); c.GPURail != nil {
		t.Errorf("3-rail class kept gpuRail %v", c.GPURail)
	}
	if !strings.Contains(strings.Join(s.Warnings, "\n"), "needs more rails than the 3 HCAs") {
		t.Errorf("no warning about the dropped gpuRail: %q", s.Warnings)
	}
	// A management-host pattern of one's own.
	opts = IBNetDiscoverOptions{ManagementHosts: regexp.MustCompile(`^b08-`)}
	f, err = ParseIBNetDiscover(ibSuperPOD, ibReadTestdata(t, ibSuperPOD), opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.NodeByName("b08-p1-dgx-08-c01"); ok {
		t.Error("b08 hosts should be management hosts")
	}
	if _, ok := f.NodeByName("B11-P1-CUFM-02"); !ok {
		t.Error("with its own pattern, the UFM host is a compute host")
	}
}

// ibFab writes ibnetdiscover output, for fabrics smaller than a capture.
type ibFab struct {
	nodes  []*ibFabNode
	byName map[string]*ibFabNode
	speed  string
}

type ibFabNode struct {
	sw     bool
	id     string
	desc   string
	nports int
	ports  map[int]ibFabLink
}

type ibFabLink struct {
	peer  *ibFabNode
	port  int
	speed string
}

func newIBFab() *ibFab { return &ibFab{byName: map[string]*ibFabNode{}, speed: "4xNDR"} }

// Speed sets the speed of the links added after it.
func (f *ibFab) Speed(s string) *ibFab { f.speed = s; return f }

// Switch adds 64-port switches with NVIDIA's description format.
func (f *ibFab) Switch(names ...string) *ibFab {
	for _, name := range names {
		n := &ibFabNode{sw: true, id: fmt.Sprintf("S-%016x", uint64(0x2c5eab0300000000)+uint64(len(f.nodes))),
			desc: "MF0;" + name + ":MQM9700/U1", nports: 64, ports: map[int]ibFabLink{}}
		f.nodes = append(f.nodes, n)
		f.byName[name] = n
	}
	return f
}

// CA adds a one-port CA with a description, linked to a switch.
func (f *ibFab) CA(desc, sw string) *ibFab {
	n := &ibFabNode{id: fmt.Sprintf("H-%016x", uint64(0xe09d730300000000)+uint64(len(f.nodes))), desc: desc, nports: 1, ports: map[int]ibFabLink{}}
	f.nodes = append(f.nodes, n)
	f.connect(n, f.byName[sw])
	return f
}

// Host adds host's HCAs: "mlx5_0@leaf-a" puts HCA mlx5_0 on switch leaf-a.
func (f *ibFab) Host(host string, hcas ...string) *ibFab {
	for _, h := range hcas {
		hca, sw, _ := strings.Cut(h, "@")
		f.CA(host+" "+hca, sw)
	}
	return f
}

// Link joins two switches with n links.
func (f *ibFab) Link(a, b string, n int) *ibFab {
	for range n {
		f.connect(f.byName[a], f.byName[b])
	}
	return f
}

func (f *ibFab) connect(a, b *ibFabNode) {
	pa, pb := ibFreePort(a), ibFreePort(b)
	a.ports[pa] = ibFabLink{b, pb, f.speed}
	b.ports[pb] = ibFabLink{a, pa, f.speed}
}

func ibFreePort(n *ibFabNode) int {
	for p := 1; ; p++ {
		if _, used := n.ports[p]; !used {
			return p
		}
	}
}

// String writes switches, then CAs, as ibnetdiscover does.
func (f *ibFab) String() string {
	var b strings.Builder
	b.WriteString("#\n# Topology file: generated by the test\n#\n")
	for _, sw := range []bool{true, false} {
		for _, n := range f.nodes {
			if n.sw != sw {
				continue
			}
			guid := n.id[2:]
			if n.sw {
				fmt.Fprintf(&b, "\nvendid=0x2c9\ndevid=0xd2f2\nsysimgguid=0x%s\nswitchguid=0x%s(%s)\n", guid, guid, guid)
				fmt.Fprintf(&b, "Switch\t%d %q\t\t# %q enhanced port 0 lid 1 lmc 0\n", n.nports, n.id, n.desc)
			} else {
				fmt.Fprintf(&b, "\nvendid=0x2c9\ndevid=0x1021\nsysimgguid=0x%s\ncaguid=0x%s\n", guid, guid)
				fmt.Fprintf(&b, "Ca\t%d %q\t\t# %q\n", n.nports, n.id, n.desc)
			}
			for p := 1; p <= n.nports; p++ {
				l, ok := n.ports[p]
				if !ok {
					continue
				}
				switch {
				case n.sw && l.peer.sw:
					fmt.Fprintf(&b, "[%d]\t%q[%d]\t\t# %q lid 2 %s\n", p, l.peer.id, l.port, l.peer.desc, l.speed)
				case n.sw:
					fmt.Fprintf(&b, "[%d]\t%q[%d](%s) \t\t# %q lid 3 %s\n", p, l.peer.id, l.port, l.peer.id[2:], l.peer.desc, l.speed)
				default:
					fmt.Fprintf(&b, "[%d](%s) \t%q[%d]\t\t# lid 3 lmc 0 %q lid 2 %s\n", p, guid, l.peer.id, l.port, l.peer.desc, l.speed)
				}
			}
		}
	}
	return b.String()
}

// twoSU is two scalable units of two rails under two spines: hosts n1-n2
// on leaves a0/a1, n3-n4 on b0/b1.
func ibTwoSU() *ibFab {
	return newIBFab().Switch("leaf-a0", "leaf-a1", "leaf-b0", "leaf-b1", "spine-1", "spine-2").
		Host("n1", "mlx5_0@leaf-a0", "mlx5_1@leaf-a1").Host("n2", "mlx5_0@leaf-a0", "mlx5_1@leaf-a1").
		Host("n3", "mlx5_0@leaf-b0", "mlx5_1@leaf-b1").Host("n4", "mlx5_0@leaf-b0", "mlx5_1@leaf-b1").
		Link("leaf-a0", "spine-1", 1).Link("leaf-a0", "spine-2", 1).Link("leaf-a1", "spine-1", 1).Link("leaf-a1", "spine-2", 1).
		Link("leaf-b0", "spine-1", 1).Link("leaf-b0", "spine-2", 1).Link("leaf-b1", "spine-1", 1).Link("leaf-b1", "spine-2", 1)
}

func TestIBNetDiscoverShapes(t *testing.T) {
	tests := []struct {
		name     string
		fab      *ibFab
		want     ibShape
		warnings []string
		// oversub is the leaf oversubscription, 0 to skip; noBisection
		// expects none.
		oversub     float64
		noBisection bool
	}{
		{
			name: "two-tier rail-optimised",
			fab:  ibTwoSU(),
			want: ibShape{Nodes: 4, GPUs: 32, Switches: 6, Levels: []Count{{"leaf", 4}, {"spine", 2}},
				Domains: []Count{{"leaf", 2}, {"cluster", 1}}},
			oversub: 1,
		},
		{
			name: "one leaf, no spine",
			fab:  newIBFab().Switch("leaf").Host("n1", "mlx5_0@leaf").Host("n2", "mlx5_0@leaf"),
			want: ibShape{Nodes: 2, GPUs: 16, Switches: 1, Levels: []Count{{"leaf", 1}},
				Domains: []Count{{"leaf", 1}, {"cluster", 1}}},
		},
		{
			name: "three tiers: spine groups make blocks",
			fab: newIBFab().Switch("l1", "l2", "l3", "l4", "s1", "s2", "s3", "s4", "core").
				Host("n1", "mlx5_0@l1").Host("n2", "mlx5_0@l2").Host("n3", "mlx5_0@l3").Host("n4", "mlx5_0@l4").
				Link("l1", "s1", 1).Link("l2", "s1", 1).Link("l1", "s2", 1).Link("l2", "s2", 1).
				Link("l3", "s3", 1).Link("l4", "s3", 1).Link("l3", "s4", 1).Link("l4", "s4", 1).
				Link("s1", "core", 1).Link("s2", "core", 1).Link("s3", "core", 1).Link("s4", "core", 1),
			want: ibShape{Nodes: 4, GPUs: 32, Switches: 9, Levels: []Count{{"leaf", 4}, {"spine", 4}, {"core", 1}},
				Domains: []Count{{"leaf", 4}, {"block", 2}, {"cluster", 1}}},
		},
		{
			name: "four tiers: leaf, block, pod, cluster",
			fab: newIBFab().Switch("l", "t1", "t2", "t3").Host("n", "mlx5_0@l").
				Link("l", "t1", 1).Link("t1", "t2", 1).Link("t2", "t3", 1),
			want: ibShape{Nodes: 1, GPUs: 8, Switches: 4, Levels: []Count{{"leaf", 1}, {"spine", 1}, {"core", 1}, {"tier4", 1}},
				Domains: []Count{{"leaf", 1}, {"block", 1}, {"pod", 1}, {"cluster", 1}}},
		},
		{
			name: "two fabrics with no switch between them",
			fab: newIBFab().Switch("l1", "l2", "s1", "l3", "l4", "s2").
				Host("n1", "mlx5_0@l1").Host("n2", "mlx5_0@l2").Host("n3", "mlx5_0@l3").Host("n4", "mlx5_0@l4").
				Link("l1", "s1", 1).Link("l2", "s1", 1).Link("l3", "s2", 1).Link("l4", "s2", 1),
			want: ibShape{Nodes: 4, GPUs: 32, Switches: 6, Levels: []Count{{"leaf", 4}, {"spine", 2}},
				Domains: []Count{{"leaf", 4}, {"block", 2}, {"cluster", 1}}},
			warnings: []string{"the fabric is in 2 parts with no switch above them (parts holding s1, s2): they cannot reach each other"},
		},
		{
			name: "oversubscribed leaf: 4 hosts at HDR, 2 uplinks",
			fab: newIBFab().Speed("4xHDR").Switch("l1", "l2", "s1").
				Host("n1", "mlx5_0@l1").Host("n2", "mlx5_0@l1").Host("n3", "mlx5_0@l1").Host("n4", "mlx5_0@l1").
				Host("n5", "mlx5_0@l2").Link("l1", "s1", 2).Link("l2", "s1", 2),
			want: ibShape{Nodes: 5, GPUs: 40, Switches: 3, Levels: []Count{{"leaf", 2}, {"spine", 1}},
				Domains: []Count{{"leaf", 2}, {"cluster", 1}}},
			oversub: 2,
		},
		{
			name: "unknown link speed: no bisection",
			fab:  newIBFab().Speed("4xWHAT").Switch("l1", "l2", "s1").Host("n1", "mlx5_0@l1").Host("n2", "mlx5_0@l2").Link("l1", "s1", 1).Link("l2", "s1", 1),
			want: ibShape{Nodes: 2, GPUs: 16, Switches: 3, Levels: []Count{{"leaf", 2}, {"spine", 1}},
				Domains: []Count{{"leaf", 2}, {"cluster", 1}}},
			noBisection: true,
		},
		{
			name: "CAs that are not compute hosts, and a missing rail",
			fab: ibTwoSU().CA("Mellanox Technologies Aggregation Node", "spine-1").CA("MT4129 ConnectX7   Mellanox Technologies", "leaf-a0").
				CA("ufm-01 mlx5_0", "leaf-b0").CA("localhost mlx5_0", "leaf-b1").CA("weird name [x] mlx5_0", "leaf-a1").
				Host("n5", "mlx5_0@leaf-b0").Host("dup", "mlx5_0@leaf-a0", "mlx5_0@leaf-a1"),
			want: ibShape{Nodes: 5, GPUs: 40, Switches: 6, Levels: []Count{{"leaf", 4}, {"spine", 2}},
				Domains: []Count{{"leaf", 2}, {"cluster", 1}}},
			warnings: []string{
				`set aside 7 CAs that are not compute hosts: 1 SHARP aggregation nodes, 1 with the firmware's default description (no host name), 1 with a description that is not "HOST HCA", 1 of management hosts (ufm-01), 1 of hosts with placeholder names (localhost), 2 of hosts whose name two machines share (an HCA name twice) (dup)`,
				"1 host reaches fewer leaf switches than their group has, so fewer rails: n5 (no link to leaf-b1)",
			},
		},
		{
			name: "crossed cables",
			fab: newIBFab().Switch("l0", "l1").
				Host("n1", "mlx5_0@l0", "mlx5_1@l1").Host("n2", "mlx5_0@l0", "mlx5_1@l1").Host("n3", "mlx5_1@l0", "mlx5_0@l1"),
			want: ibShape{Nodes: 3, GPUs: 24, Switches: 2, Levels: []Count{{"leaf", 2}},
				Domains: []Count{{"leaf", 1}, {"cluster", 1}}},
			warnings: []string{"1 host has HCAs on the leaf switch of another rail (crossed cables?): n3 (mlx5_0 on l1, the leaf of mlx5_1; mlx5_1 on l0, the leaf of mlx5_0)"},
		},
		{
			name: "a leaf whose hosts are all unnamed is not a spine",
			fab: newIBFab().Switch("l1", "l2", "s1").Host("n1", "mlx5_0@l1").CA("MT4129 ConnectX7   Mellanox Technologies", "l2").
				Link("l1", "s1", 1).Link("l2", "s1", 1),
			want: ibShape{Nodes: 1, GPUs: 8, Switches: 2, Levels: []Count{{"leaf", 1}, {"spine", 1}},
				Domains: []Count{{"leaf", 1}, {"cluster", 1}}},
			warnings: []string{
				"set aside 1 CA that is not compute hosts: 1 with the firmware's default description (no host name)",
				"set aside 1 switch whose CAs are all set aside (no compute host makes them leaves): l2",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			text := tc.fab.String()
			f, err := ParseIBNetDiscover("fab.out", []byte(text), IBNetDiscoverOptions{})
			if err != nil {
				t.Fatalf("%v\n%s", err, text)
			}
			s := f.Summarize()
			if d := cmp.Diff(tc.want, ibShapeOf(s)); d != "" {
				t.Errorf("summary (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.warnings, s.Warnings); d != "" {
				t.Errorf("warnings (-want +got):\n%s", d)
			}
			if tc.oversub > 0 {
				if len(s.Oversubscription) == 0 || s.Oversubscription[0] != (Ratio{"leaf", tc.oversub}) {
					t.Errorf("oversubscription %v, want leaf %v", s.Oversubscription, tc.oversub)
				}
			}
			if tc.noBisection != (s.BisectionGbps == nil) {
				t.Errorf("bisection %v", s.BisectionGbps)
			}
			ibncclCheckFabric(t, f)
		})
	}
}

// TestIBNetDiscoverLineEnds reads a capture saved by a Windows editor
// (byte-order mark, CRLF) as the original.
func TestIBNetDiscoverLineEnds(t *testing.T) {
	text := ibTwoSU().String()
	want, err := ParseIBNetDiscover("fab.out", []byte(text), IBNetDiscoverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := Parse("fab.out", []byte("\ufeff"+strings.ReplaceAll(text, "\n", "\r\n")), FormatAuto)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want.Summarize(), got.Summarize()); d != "" {
		t.Errorf("summary (-LF +BOM/CRLF):\n%s", d)
	}
}

func TestIBNetDiscoverErrors(t *testing.T) {
	superpod := ibReadTestdata(t, ibSuperPOD)
	lines := strings.SplitAfter(string(superpod), "\n")
	half := strings.Join(lines[:len(lines)/2], "")
	// Switch port 1 of the first leaf, and the CA behind it.
	retarget := func(old, new string) string {
		if !strings.Contains(ibTwoSU().String(), old) {
			t.Fatalf("fixture lacks %q", old)
		}
		return strings.Replace(ibTwoSU().String(), old, new, 1)
	}
	fab := ibTwoSU().String()
	firstSwitch := fab[strings.Index(fab, "\nvendid"):strings.Index(fab, "\n[1]")]
	tests := []struct {
		name, file, data string
		line             int
		msg              string
	}{
		{"topograph bad sample", ibBad, string(ibReadTestdata(t, ibBad)), 10,
			`CA "H-b8e92403009ca838" ("dgx-gb200-n01-c1 HCA-1") has no links and the file has no switch: expected the capture of a fabric`},
		{"empty", "e.out", "  \n\n", 0, "file is empty"},
		{"binary", "b.out", "Switch\x00\x01\x02", 0, "file is binary"},
		{"only comments", "c.out", "#\n# Topology file\nvendid=0x2c9\n", 0, "no nodes"},
		{"truncated capture", "half.out", half, 0, "but the file has no node"},
		{"cut in the middle of a line", "cut.out", fab[:strings.Index(fab, "\n[1]")+8], 10, `no quoted peer ID`},
		{"link to a node that does not exist", "x.out", retarget(`"H-e09d730300000006"[1]`, `"H-00000000deadbeef"[1]`), 10,
			`links to "H-00000000deadbeef", but the file has no node "H-00000000deadbeef"`},
		{"link to a port beyond the peer's ports", "x.out", retarget(`"H-e09d730300000006"[1]`, `"H-e09d730300000006"[2]`), 10,
			`links to port 2 of "H-e09d730300000006", which has ports 1 to 1`},
		{"link to a port the peer does not list", "x.out", retarget(`"S-2c5eab0300000004"[1]`, `"S-2c5eab0300000004"[9]`), 12,
			`links to port 9 of "S-2c5eab0300000004", but that port is not listed`},
		{"two ends disagree", "x.out", retarget(`"S-2c5eab0300000004"[1]`+"\t\t# \"MF0;spine-1:MQM9700/U1\" lid 2 4xNDR\n[4]",
			`"S-2c5eab0300000004"[1]`+"\t\t# \"MF0;spine-1:MQM9700/U1\" lid 2 4xNDR\n[5]"), 13,
			`port 5 of "S-2c5eab0300000000" links to port 1 of "S-2c5eab0300000005", but line 60 says that port links to port 4 of "S-2c5eab0300000000": the two ends disagree`},
		{"duplicate GUID", "dup.out", fab + firstSwitch, 125, `node "S-2c5eab0300000000" appears twice (first at line 9): duplicate GUID`},
		{"port listed twice", "x.out", retarget("[4]\t", "[3]\t"), 13, "port 3 of \"S-2c5eab0300000000\" listed twice (first at line 12)"},
		{"port beyond the switch's ports", "x.out", retarget("[4]\t", "[99]\t"), 13, `port 99 of switch "S-2c5eab0300000000": it has ports 1 to 64`},
		{"port line before any node", "p.out", "[1]\t\"S-1\"[1]\n", 1, "port line before any node"},
		{"bad port count", "n.out", "Switch\tmany \"S-1\"\n", 1, `expected Switch NPORTS "ID" # "DESCRIPTION": port count "" is not a number`},
		{"garbage line", "g.out", fab[:200] + "\nhello world\n", strings.Count(fab[:200], "\n") + 2, `expected a node line (Switch, Ca, Rt), a port line ([PORT] ...), key=value or a # comment, got "hello world"`},
		{"ports report", "p.out", "SW    73  1 0x2c5eab0300b87b40 4x NDR - CA   647  1 0xe09d7303007a4bd8 ( 'x' - 'y' )\n", 1,
			"run ibnetdiscover without -p"},
		{"no compute hosts", "n.out", newIBFab().Switch("l").CA("Mellanox Technologies Aggregation Node", "l").String(), 0,
			"no compute hosts: expected CAs described \"HOST HCA\""},
		{"host on leaves of two groups", "two.out", ibTwoSU().Host("n9", "mlx5_0@leaf-a0", "mlx5_1@leaf-b1").String(), 127,
			`host "n9" has HCAs on leaves of 2 different groups (mlx5_0 on leaf-a0, mlx5_1 on leaf-b1): expected all HCAs of a host on the leaf switches of one group`},
		{"five tiers", "deep.out", newIBFab().Switch("l", "t1", "t2", "t3", "t4").Host("n", "mlx5_0@l").
			Link("l", "t1", 1).Link("t1", "t2", 1).Link("t2", "t3", 1).Link("t3", "t4", 1).String(), 33,
			`switch "t3" is 3 tiers above the leaves and has switches above it: the model holds at most four tiers`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseIBNetDiscover(tc.file, []byte(tc.data), IBNetDiscoverOptions{})
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want an *Error", err)
			}
			if pe.File != tc.file || (tc.line > 0 && pe.Line != tc.line) || !strings.Contains(pe.Msg, tc.msg) {
				t.Errorf("got  %v\nwant %s:%d: ...%s...", err, tc.file, tc.line, tc.msg)
			}
		})
	}
}

// checkFabric asserts what must hold of any fabric a loader returns: the
// GPU count adds up, nodes hang from leaves, the levels' switches add up,
// and the native format carries the same summary.
func ibncclCheckFabric(t testing.TB, f *Fabric) {
	t.Helper()
	s := f.Summarize()
	gpus := 0
	for i := range f.Nodes {
		gpus += f.NodeGPUs(NodeID(i))
		if f.Domains[f.Nodes[i].Leaf].Level != LevelLeaf {
			t.Fatalf("node %s hangs from a %s", f.Nodes[i].Name, f.Domains[f.Nodes[i].Leaf].Level)
		}
		if id, ok := f.NodeByName(f.Nodes[i].Name); !ok || id != NodeID(i) {
			t.Fatalf("node %s not found by name", f.Nodes[i].Name)
		}
	}
	if gpus != s.GPUs {
		t.Fatalf("summary says %d GPUs, nodes hold %d", s.GPUs, gpus)
	}
	perTier := 0
	for _, l := range s.Levels {
		perTier += l.Count
	}
	if perTier != s.Switches {
		t.Fatalf("levels hold %d switches, summary says %d", perTier, s.Switches)
	}
	var buf bytes.Buffer
	if err := f.WriteYAML(&buf); err != nil {
		t.Fatalf("WriteYAML: %v", err)
	}
	g, format, err := Parse("roundtrip.yaml", buf.Bytes(), FormatAuto)
	if err != nil || format != FormatNative {
		t.Fatalf("native form does not load back (%s): %v\n%s", format, err, buf.String())
	}
	back := g.Summarize()
	s.Warnings, back.Warnings = nil, nil // the native form does not carry them
	if d := cmp.Diff(s, back); d != "" {
		t.Fatalf("summary changed through the native format (-loaded +reloaded):\n%s\n%s", d, buf.String())
	}
}

func TestIBNetDiscoverRoundTrip(t *testing.T) {
	f, err := ParseIBNetDiscover(ibSuperPOD, ibReadTestdata(t, ibSuperPOD), IBNetDiscoverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ibncclCheckFabric(t, f)
}

// BenchmarkLoadIBNetDiscover parses the 300 KB SuperPOD capture (582 CAs,
// 40 switches).
func BenchmarkLoadIBNetDiscover(b *testing.B) {
	data := ibReadTestdata(b, ibSuperPOD)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Parse(ibSuperPOD, data, FormatIBNetDiscover); err != nil {
			b.Fatal(err)
		}
	}
}
