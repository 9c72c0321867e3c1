package topology

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// ncclShape is what the NCCL tests compare of a topology.
type ncclShape struct {
	GPUs, NICs, RDMANICs int
	NUMANodes            []int
	PCISwitches          int
	GPURail              []int
	Paths                []string
	Model                string
}

func ncclShapeOf(t *NCCLTopo) ncclShape {
	s := ncclShape{GPUs: len(t.GPUs), NICs: len(t.NICs), NUMANodes: t.NUMANodes, PCISwitches: t.PCISwitches}
	c := t.Class("x")
	s.GPURail, s.Model = c.GPURail, c.GPUModel
	for _, n := range t.NICs {
		if n.RDMA {
			s.RDMANICs++
		}
	}
	for _, g := range t.GPUs {
		s.Paths = append(s.Paths, g.Path)
	}
	return s
}

func TestNCCLXMLAzure(t *testing.T) {
	pix8 := []string{"PIX", "PIX", "PIX", "PIX", "PIX", "PIX", "PIX", "PIX"}
	tests := []struct {
		file     string
		want     ncclShape
		warnings []string
	}{
		// ND H100 v5: one PCIe switch per GPU/NIC pair, two NUMA nodes.
		{"testdata/azure-ndv5-topo.xml", ncclShape{GPUs: 8, NICs: 8, RDMANICs: 8, NUMANodes: []int{0, 1}, PCISwitches: 8,
			GPURail: []int{0, 1, 2, 3, 4, 5, 6, 7}, Paths: pix8, Model: "unknown"}, nil},
		// ND A100 v4: two GPUs and two NICs per switch, four NUMA nodes.
		{"testdata/azure-ndv4-topo.xml", ncclShape{GPUs: 8, NICs: 8, RDMANICs: 8, NUMANodes: []int{0, 1, 2, 3}, PCISwitches: 4,
			GPURail: []int{0, 1, 2, 3, 4, 5, 6, 7}, Paths: pix8, Model: "unknown"}, nil},
		// ND V100 v2: one NIC on NUMA 0 for all eight GPUs.
		{"testdata/azure-ndv2-topo.xml", ncclShape{GPUs: 8, NICs: 1, RDMANICs: 1, NUMANodes: []int{0, 1},
			GPURail: []int{0, 0, 0, 0, 0, 0, 0, 0}, Paths: []string{"PHB", "PHB", "PHB", "PHB", "SYS", "SYS", "SYS", "SYS"}, Model: "unknown"}, nil},
		// NC A100 v4: PCIe A100s and a socket NIC, no RDMA.
		{"testdata/azure-ncv4-topo.xml", ncclShape{GPUs: 4, NICs: 1, NUMANodes: []int{0, 1, 2, 3},
			Paths: []string{"", "", "", ""}, Model: "A100-80GB"},
			[]string{"no RDMA NIC: the node reaches others only through the CPU (eth0)"}},
		{"testdata/nccl-dump-pxb-example.xml", ncclShape{GPUs: 4, NICs: 3, RDMANICs: 2, NUMANodes: []int{0, 1}, PCISwitches: 5,
			GPURail: []int{0, 0, 1, 1}, Paths: []string{"PXB", "PXB", "PIX", "PIX"}, Model: "H100-80GB"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			data := ibReadTestdata(t, tc.file)
			topo, err := ParseNCCLTopo(tc.file, data)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, ncclShapeOf(topo)); d != "" {
				t.Errorf("topology (-want +got):\n%s", d)
			}
			// Each GPU's NIC is on its NUMA node, unless the path
			// crosses the system.
			for _, g := range topo.GPUs {
				if g.NIC >= 0 && g.Path != "SYS" && topo.NICs[g.NIC].NUMA != g.NUMA {
					t.Errorf("GPU %s (NUMA %d) uses NIC %s on NUMA %d", g.BusID, g.NUMA, topo.NICs[g.NIC].BusID, topo.NICs[g.NIC].NUMA)
				}
			}
			f, format, err := Parse(tc.file, data, FormatAuto)
			if err != nil {
				t.Fatal(err)
			}
			if format != FormatNCCLXML {
				t.Errorf("detected %s", format)
			}
			s := f.Summarize()
			want := ibShape{Nodes: 1, GPUs: tc.want.GPUs, Domains: []Count{{"leaf", 1}, {"cluster", 1}}}
			if d := cmp.Diff(want, ibShapeOf(s)); d != "" {
				t.Errorf("summary (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.warnings, s.Warnings); d != "" {
				t.Errorf("warnings (-want +got):\n%s", d)
			}
			if c := f.Class(0); c.Rails != tc.want.RDMANICs || c.GPUs != tc.want.GPUs {
				t.Errorf("class %+v", *c)
			}
			ibncclCheckFabric(t, f)
		})
	}
}

// TestNCCLXMLPairs checks the GPU-to-NIC pairs against the files' PCIe
// switches: on ND A100 v4 each switch holds two GPUs and two NICs, and each
// GPU gets a NIC of its own switch.
func TestNCCLXMLPairs(t *testing.T) {
	for file, want := range map[string]map[string]string{
		"testdata/azure-ndv4-topo.xml": {
			"0001:00:00.0": "0101:00:00.0", "0002:00:00.0": "0102:00:00.0", // switch ffff:ff:02.0, NUMA 1
			"0003:00:00.0": "0103:00:00.0", "0004:00:00.0": "0104:00:00.0", // ffff:ff:01.0, NUMA 0
			"000b:00:00.0": "0105:00:00.0", "000c:00:00.0": "0106:00:00.0", // ffff:ff:04.0, NUMA 3
			"000d:00:00.0": "0107:00:00.0", "000e:00:00.0": "0108:00:00.0", // ffff:ff:03.0, NUMA 2
		},
		"testdata/azure-ndv5-topo.xml": {
			"0001:00:00.0": "0101:00:00.0", "0002:00:00.0": "0102:00:00.0", "0003:00:00.0": "0103:00:00.0", "0008:00:00.0": "0104:00:00.0",
			"0009:00:00.0": "0105:00:00.0", "000a:00:00.0": "0106:00:00.0", "000b:00:00.0": "0107:00:00.0", "000c:00:00.0": "0108:00:00.0",
		},
	} {
		topo, err := ParseNCCLTopo(file, ibReadTestdata(t, file))
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, g := range topo.GPUs {
			got[g.BusID] = topo.NICs[g.NIC].BusID
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%s: GPU -> NIC (-want +got):\n%s", file, d)
		}
	}
}

func TestNCCLTopoForAgent(t *testing.T) {
	file := "testdata/nccl-dump-pxb-example.xml"
	topo, err := ParseNCCLTopo(file, ibReadTestdata(t, file))
	if err != nil {
		t.Fatal(err)
	}
	wantNICs := []NCCLNIC{
		{Name: "mlx5_0", Dev: 0, BusID: "0000:1a:00.0", NUMA: 0, SpeedGbps: 400, Port: 1, GUID: "0xe09d730300a1b2c3", RDMA: true},
		{Name: "mlx5_1", Dev: 1, BusID: "0000:9d:00.0", NUMA: 1, SpeedGbps: 400, Port: 1, GUID: "0xe09d730300a1b2d4", RDMA: true},
		{Name: "eth0", Dev: 2, NUMA: 0, SpeedGbps: 25, GUID: "0x0"},
	}
	if d := cmp.Diff(wantNICs, topo.NICs); d != "" {
		t.Errorf("NICs (-want +got):\n%s", d)
	}
	for _, tc := range []struct {
		gpus []int
		want string
		ok   bool
	}{
		{[]int{0}, "=mlx5_0:1", true},
		{[]int{0, 1}, "=mlx5_0:1", true},
		{[]int{3, 0}, "=mlx5_1:1,mlx5_0:1", true},
		{nil, "", false},
	} {
		got, ok := topo.IBHCA(tc.gpus...)
		if got != tc.want || ok != tc.ok {
			t.Errorf("IBHCA(%v) = %q, %v; want %q, %v", tc.gpus, got, ok, tc.want, tc.ok)
		}
	}
	// Azure's files do not name the NICs: the agent maps bus IDs itself.
	file = "testdata/azure-ndv5-topo.xml"
	if topo, err = ParseNCCLTopo(file, ibReadTestdata(t, file)); err != nil {
		t.Fatal(err)
	}
	if _, ok := topo.IBHCA(0); ok {
		t.Error("IBHCA without NIC names")
	}
	if n := topo.NICsFor(5); len(n) != 1 || n[0].BusID != "0106:00:00.0" {
		t.Errorf("NICsFor(5) = %+v", n)
	}

	f, err := ParseNCCLXML("testdata/nccl-dump-pxb-example.xml", ibReadTestdata(t, "testdata/nccl-dump-pxb-example.xml"), NCCLXMLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := NodeClass{Name: "nccl-dump-pxb-example", GPUModel: "H100-80GB", GPUs: 4, GPUMemoryGiB: 80, Rails: 2, RailGbps: 400,
		GPURail: []int{0, 0, 1, 1}, HCAs: []string{"mlx5_0", "mlx5_1"}}
	if d := cmp.Diff(want, f.Classes[0]); d != "" {
		t.Errorf("class (-want +got):\n%s", d)
	}
}

func TestNCCLXMLOptions(t *testing.T) {
	file := "testdata/azure-ndv5-topo.xml"
	f, err := ParseNCCLXML(file, ibReadTestdata(t, file), NCCLXMLOptions{Node: "ndv5-0001",
		Class: NodeClass{Name: "nd-h100-v5", GPUModel: "H100-80GB", GPUMemoryGiB: 80, NVLinkGBps: 900, RailGbps: 400}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.NodeByName("ndv5-0001"); !ok {
		t.Error("node not named by the option")
	}
	s := f.Summarize()
	if s.InjectionGbps != 3200 || s.GPUModels["H100-80GB"] != 8 {
		t.Errorf("injection %v, models %v", s.InjectionGbps, s.GPUModels)
	}
	if c := f.Classes[0]; c.Name != "nd-h100-v5" || c.NVLinkGBps != 900 || c.Rails != 8 {
		t.Errorf("class %+v", c)
	}
}

func TestNCCLXMLByteOrderMark(t *testing.T) {
	data := append([]byte("\ufeff"), ibReadTestdata(t, "testdata/azure-ndv5-topo.xml")...)
	f, format, err := Parse("bom.xml", data, FormatAuto)
	if err != nil || format != FormatNCCLXML || f.NumGPUs() != 8 {
		t.Fatalf("%s, %v", format, err)
	}
}

func TestNCCLTopoOrder(t *testing.T) {
	// CUDA indexes given: they order the GPUs, not the bus IDs.
	xml := `<system version="1"><cpu numaid="0">
  <pci busid="0000:01:00.0" class="0x030200"><gpu dev="1"/></pci>
  <pci busid="0000:02:00.0" class="0x030200"><gpu dev="0"/></pci>
  <pci busid="0000:03:00.0" class="0x020000"/>
  <widget/>
</cpu></system>`
	topo, err := ParseNCCLTopo("order.xml", []byte(xml))
	if err != nil {
		t.Fatal(err)
	}
	if topo.GPUs[0].BusID != "0000:02:00.0" || topo.GPUs[0].Dev != 0 {
		t.Errorf("first GPU %+v", topo.GPUs[0])
	}
	// An Ethernet device with no <net> is not known to be RDMA.
	if len(topo.NICs) != 1 || topo.NICs[0].RDMA || topo.GPUs[0].NIC != -1 {
		t.Errorf("NICs %+v, GPU 0 NIC %d", topo.NICs, topo.GPUs[0].NIC)
	}
	if d := cmp.Diff([]string{"line 5: skipped <widget>, an element this loader does not know"}, topo.Warnings); d != "" {
		t.Errorf("warnings (-want +got):\n%s", d)
	}
}

func TestNCCLXMLErrors(t *testing.T) {
	ndv5 := string(ibReadTestdata(t, "testdata/azure-ndv5-topo.xml"))
	wrap := func(body string) string {
		return "<system version=\"1\">\n<cpu numaid=\"0\">\n" + body + "\n</cpu>\n</system>\n"
	}
	gpu := `<pci busid="0000:01:00.0" class="0x030200"/>`
	var many strings.Builder
	for i := range 65 {
		fmt.Fprintf(&many, "<pci busid=\"0000:%02x:00.0\" class=\"0x030200\"/>\n", i)
	}
	tests := []struct {
		name, data string
		line       int
		msg        string
	}{
		{"empty", " \n", 0, "file is empty"},
		{"binary", "<\x00\x01\x02", 0, "file is binary"},
		{"truncated", ndv5[:len(ndv5)/2], 19, "broken XML: unexpected EOF"},
		{"broken tag", wrap(`<pci busid="0000:01:00.0" class="0x030200"`), 4, "broken XML"},
		{"mismatched end", wrap(gpu + "</pci>"), 3, "broken XML: element <cpu> closed by </pci>"},
		{"graph file", string(ibReadTestdata(t, "testdata/azure-ncv4-graph.xml")), 1, "this is an NCCL graph file"},
		{"other root", "<topology/>", 1, "root element <topology>: expected <system>"},
		{"gpu without a PCI parent", wrap(`<gpu dev="0"/>`), 3, "<gpu> without a PCI parent: expected <gpu> inside <pci busid=...>"},
		{"net outside nic", wrap(gpu + `<net name="mlx5_0"/>`), 3, "<net> inside <cpu>: expected it inside <nic>"},
		{"pci at the top", `<system><pci busid="0000:01:00.0"/></system>`, 1, "<pci> inside <system>: expected it inside <cpu> or <pci>"},
		{"cpu in cpu", wrap(`<cpu/>`), 3, "<cpu> inside <cpu>: expected it inside <system>"},
		{"bad bus id", wrap(`<pci busid="01:00" class="0x030200"/>`), 3, `<pci busid="01:00">: expected a PCI bus ID`},
		{"bad class", wrap(`<pci busid="0000:01:00.0" class="GPU"/>`), 3, `<pci class="GPU">: expected a PCI class code`},
		{"duplicate bus id", wrap(gpu + "\n" + gpu), 4, "PCI bus ID 0000:01:00.0 appears twice (first at line 3)"},
		{"duplicate numaid", "<system>\n<cpu numaid=\"0\"/>\n<cpu numaid=\"0\"/>\n</system>", 3, `<cpu numaid="0"> appears twice (first at line 2)`},
		{"bad numaid", "<system><cpu numaid=\"zero\"/></system>", 1, `<cpu numaid="zero">: expected an integer`},
		{"duplicate gpu dev", wrap(`<pci busid="0000:01:00.0"><gpu dev="0"/></pci>` + "\n" + `<pci busid="0000:02:00.0"><gpu dev="0"/></pci>`), 4,
			`<gpu dev="0"> appears twice (also in <pci busid="0000:01:00.0">)`},
		{"two gpus in one pci", wrap(`<pci busid="0000:01:00.0"><gpu dev="0"/><gpu dev="1"/></pci>`), 3, "second <gpu>"},
		{"bad speed", wrap(gpu + `<pci busid="0000:02:00.0" class="0x020700"><nic><net name="mlx5_0" speed="fast"/></nic></pci>`), 3,
			`<net speed="fast">: expected the speed in Mb/s`},
		{"duplicate net", wrap(gpu + "<nic><net name=\"mlx5_0\"/>\n<net name=\"mlx5_0\"/></nic>"), 4, `<net name="mlx5_0"> appears twice (first at line 3)`},
		{"65 GPUs", wrap(many.String()), 67, "more than 64 GPUs in one node"},
		{"no GPUs", wrap(`<pci busid="0000:02:00.0" class="0x020700"/>`), 0, "no GPUs"},
		{"text outside", "hello <system/>", 1, "text outside <system>"},
		{"second root", "<system><cpu><pci busid=\"0000:01:00.0\" class=\"0x030200\"/></cpu></system>\n<system/>", 2, "after the end of <system>"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseNCCLXML("n.xml", []byte(tc.data), NCCLXMLOptions{})
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("got %v, want an *Error", err)
			}
			if pe.File != "n.xml" || pe.Line != tc.line || !strings.Contains(pe.Msg, tc.msg) {
				t.Errorf("got  %v\nwant n.xml:%d: ...%s...", err, tc.line, tc.msg)
			}
		})
	}
}
