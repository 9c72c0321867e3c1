package topology

// Loading NCCL topology XML (NCCL_TOPO_FILE, or NCCL_TOPO_DUMP_FILE output)
// into the fabric model.
//
// The file describes one node: <system> holds <cpu numaid=...> elements
// (NUMA nodes), under which <pci> elements nest (PCIe switches, class
// 0x0604) down to GPUs (class 0x03xxxx, or a <pci> holding <gpu>) and NICs
// (class 0x02xxxx, whose <nic><net name=...> children name the network
// devices; a <nic> directly under <cpu> is a NIC outside PCI, such as a
// socket interface). Azure's ND A100 v4 / ND H100 v5 files give only PCI
// bus IDs and classes; NCCL's dumps add names, speeds and CUDA indexes.
//
// Mapping (docs/formats-ib-nccl.md has the long form):
//
//   - One node, under one leaf domain and one cluster, both without
//     switches. The node is named by NCCLXMLOptions.Node, else by the file
//     name without extension.
//   - GPUs are numbered by their <gpu dev=...> (the CUDA index) when every
//     GPU has one, else in PCI bus ID order (nvidia-smi's order). NICs are
//     numbered by <net dev=...> when every NIC has one, else in bus ID order.
//   - A NIC is a rail when it is an RDMA device: InfiniBand class 0x0207,
//     or a <net> with gdr="1" or a non-zero guid. Rails = the number of such
//     NICs; RailGbps their slowest speed (net speed is in Mb/s); HCAs their
//     names when every one is named.
//   - Affinity (GPURail[i], NCCLGPU.NIC): the rails closest to GPU i are
//     those under the deepest element the GPU shares with any rail: the
//     same PCIe switch (NCCL's PIX), a PCIe switch further up (PXB), the
//     same CPU / NUMA node (PHB), else the whole system (SYS). GPUs that
//     share that element take its rails in turn, in GPU and NIC order, so
//     two GPUs and two NICs under one switch pair off one to one.
//
// Errors name the line: XML syntax, a root other than <system> (an NCCL
// graph file is refused by name), elements in the wrong parent (a <gpu>
// without a PCI parent, a <net> outside <nic>), bad or duplicate bus IDs,
// NUMA IDs or GPU indexes, and a file without GPUs.

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// NCCLTopo is what an NCCL topology file says about one node, for the node
// agent (which HCAs serve which GPUs: NCCL_IB_HCA) and for the fabric.
type NCCLTopo struct {
	GPUs []NCCLGPU
	NICs []NCCLNIC
	// NUMANodes lists the numaid of each <cpu>, in file order.
	NUMANodes []int
	// PCISwitches counts the PCIe bridges (class 0x0604) the file lists.
	PCISwitches int
	// Warnings lists elements the loader did not know and skipped.
	Warnings []string
}

// NCCLGPU is one GPU.
type NCCLGPU struct {
	Dev   int    // CUDA index: the <gpu dev> attribute, else the rank in bus ID order
	BusID string // PCI bus ID, lower case ("0001:00:00.0")
	NUMA  int    // numaid of the enclosing <cpu>, -1 when not given
	Model string // from the PCI device ID when known ("H100-80GB"), else ""
	SM    int    // compute capability times ten (80, 90), 0 when not given
	// NIC is the index in NCCLTopo.NICs of the rail that serves this GPU,
	// -1 when the node has no RDMA NIC.
	NIC int
	// Path says how near that NIC is, in NCCL's terms: PIX (same PCIe
	// switch), PXB (through more PCIe switches), PHB (through the CPU of
	// the same NUMA node), SYS (across NUMA nodes). Empty without a NIC.
	Path string
}

// NCCLNIC is one network device.
type NCCLNIC struct {
	Name      string  // device name (mlx5_0) when the file gives it
	Dev       int     // NCCL's net index when given, else -1
	BusID     string  // PCI bus ID, empty for a NIC outside PCI
	NUMA      int     // numaid of the enclosing <cpu>, -1 when not given
	SpeedGbps float64 // 0 when not given
	Port      int     // port of a multi-port device, 0 when not given
	GUID      string
	RDMA      bool // an InfiniBand or RDMA device: a rail
}

// NCCLXMLOptions tunes ParseNCCLXML.
type NCCLXMLOptions struct {
	// Node names the node; default: the file name without extension.
	Node string
	// Class overrides what the file gives: its non-zero Name, GPUModel,
	// GPUMemoryGiB, NVLinkGBps and RailGbps replace the loader's.
	Class NodeClass
}

func parseNCCLXML(name string, data []byte) (*Fabric, error) {
	return ParseNCCLXML(name, data, NCCLXMLOptions{})
}

// ParseNCCLXML builds a one-node fabric from an NCCL topology file.
func ParseNCCLXML(name string, data []byte, opts NCCLXMLOptions) (*Fabric, error) {
	t, err := ParseNCCLTopo(name, data)
	if err != nil {
		return nil, err
	}
	node := opts.Node
	if node == "" {
		node = ncclNodeName(name)
	}
	cls := t.Class(node)
	{
		o := opts.Class
		if o.Name != "" {
			cls.Name = o.Name
		}
		if o.GPUModel != "" {
			cls.GPUModel = o.GPUModel
		}
		if o.GPUMemoryGiB != 0 {
			cls.GPUMemoryGiB = o.GPUMemoryGiB
		}
		if o.NVLinkGBps != 0 {
			cls.NVLinkGBps = o.NVLinkGBps
		}
		if o.RailGbps != 0 {
			cls.RailGbps = o.RailGbps
		}
	}
	b := NewBuilder(node)
	for _, w := range t.Warnings {
		b.Warn("%s", w)
	}
	if cls.Rails == 0 {
		var socket []string
		for _, n := range t.NICs {
			socket = append(socket, ncclFirst(n.Name, n.BusID, "unnamed"))
		}
		msg := "no RDMA NIC: the node reaches others only through the CPU"
		if len(socket) > 0 {
			msg += " (" + strings.Join(socket, ", ") + ")"
		}
		b.Warn("%s", msg)
	}
	c := b.AddClass(cls)
	root, err := b.AddDomain(Domain{Name: "cluster", Level: LevelCluster, Parent: NoDomain})
	if err != nil {
		return nil, errorf(name, 0, "%v", err)
	}
	leaf, err := b.AddDomain(Domain{Name: "leaf", Level: LevelLeaf, Parent: root})
	if err != nil {
		return nil, errorf(name, 0, "%v", err)
	}
	if _, err := b.AddNode(node, c, leaf); err != nil {
		return nil, errorf(name, 0, "%v", err)
	}
	f, err := b.Build()
	if err != nil {
		return nil, errorf(name, 0, "%v", err)
	}
	return f, nil
}

// ncclFirst returns the first non-empty string.
func ncclFirst(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// ncclNodeName makes a host name of a file name: "azure-ndv5-topo".
func ncclNodeName(file string) string {
	base := strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	var sb strings.Builder
	for _, r := range base {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			sb.WriteRune(r)
		default:
			sb.WriteByte('-')
		}
	}
	s := strings.Trim(sb.String(), ".-_")
	if s == "" || len(s) > 200 {
		return "node"
	}
	return s
}

// Class is the node class the file describes, named name.
func (t *NCCLTopo) Class(name string) NodeClass {
	c := NodeClass{Name: name, GPUModel: "unknown", GPUs: len(t.GPUs)}
	models := map[string]bool{}
	for _, g := range t.GPUs {
		models[g.Model] = true
	}
	if len(models) == 1 && t.GPUs[0].Model != "" {
		c.GPUModel = t.GPUs[0].Model
		c.GPUMemoryGiB = ncclGPUMemory[c.GPUModel]
	}
	rail := map[int]int{} // NIC index -> rail
	var hcas []string
	speed := math.Inf(1)
	for i, n := range t.NICs {
		if !n.RDMA {
			continue
		}
		rail[i] = c.Rails
		c.Rails++
		hcas = append(hcas, n.Name)
		speed = min(speed, n.SpeedGbps)
	}
	if c.Rails == 0 {
		return c
	}
	c.RailGbps = speed
	if !slices.Contains(hcas, "") {
		c.HCAs = hcas
	}
	c.GPURail = make([]int, len(t.GPUs))
	for i, g := range t.GPUs {
		c.GPURail[i] = rail[g.NIC]
	}
	return c
}

// NICsFor lists, without repeats, the NICs serving the given GPUs (indexes
// into GPUs), in GPU order.
func (t *NCCLTopo) NICsFor(gpus ...int) []NCCLNIC {
	var out []NCCLNIC
	seen := map[int]bool{}
	for _, g := range gpus {
		if g < 0 || g >= len(t.GPUs) {
			continue
		}
		if n := t.GPUs[g].NIC; n >= 0 && !seen[n] {
			seen[n] = true
			out = append(out, t.NICs[n])
		}
	}
	return out
}

// IBHCA is the NCCL_IB_HCA value that restricts NCCL to the NICs serving
// the given GPUs ("=mlx5_0,mlx5_1": exact names), and false when those NICs
// are not named in the file or there are none.
func (t *NCCLTopo) IBHCA(gpus ...int) (string, bool) {
	nics := t.NICsFor(gpus...)
	if len(nics) == 0 {
		return "", false
	}
	names := make([]string, len(nics))
	for i, n := range nics {
		if n.Name == "" {
			return "", false
		}
		names[i] = n.Name
		if n.Port > 0 {
			names[i] += ":" + strconv.Itoa(n.Port)
		}
	}
	return "=" + strings.Join(names, ","), true
}

// ncclModels names GPUs by PCI device ID (vendor 0x10de).
var ncclModels = map[uint64]string{
	0x1db1: "V100-16GB", 0x1db4: "V100-16GB", 0x1db5: "V100-32GB",
	0x20b0: "A100-40GB", 0x20f1: "A100-40GB", 0x20b2: "A100-80GB", 0x20b5: "A100-80GB",
	0x2330: "H100-80GB", 0x2331: "H100-80GB", 0x2335: "H200-141GB",
}

var ncclGPUMemory = map[string]int{
	"V100-16GB": 16, "V100-32GB": 32, "A100-40GB": 40, "A100-80GB": 80, "H100-80GB": 80, "H200-141GB": 141,
}

// ncclElem is an element of the file, kept while its subtree is read.
type ncclElem struct {
	name   string
	line   int
	parent int // index in the tree, -1 for the root
	depth  int
	numa   int // numaid of the enclosing cpu, -1 when none
	gpu    int // for a <pci>: index in gpus of its GPU, -1 when none
	isPCI  bool
	class  uint64
	busID  string
	hasNet bool // a <pci> whose <nic> has <net> children
	// gpuElem marks a <pci> that holds a <gpu> element.
	gpuElem bool
	attrs   []xml.Attr // a <pci>'s attributes, for the model of a <gpu> in it
}

type ncclParser struct {
	name    string
	tree    []ncclElem
	gpus    []NCCLGPU
	gpuAt   []int // element of each GPU (its <pci>)
	gpuDev  []int // dev attribute, -1 when absent
	nics    []NCCLNIC
	nicAt   []int // element of each NIC (<pci>, or the <nic> for one outside PCI)
	busLine map[string]int
	numaSet map[int]int
	devSeen map[int]int    // gpu dev -> GPU
	netSeen map[string]int // net name:port -> line
	pciNICs int            // network-class <pci> elements so far
	unknown map[string]bool
	topo    NCCLTopo
}

var ncclBusRe = regexp.MustCompile(`^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]$`)

// Bounds on what one node can hold, far above real machines, so that a
// hostile file costs linear time: nesting (real files are a few levels
// deep), GPUs (the fabric model's limit) and NICs.
const (
	ncclMaxDepth = 64
	ncclMaxGPUs  = 64
	ncclMaxNICs  = 1024
)

// ParseNCCLTopo reads an NCCL topology file; name is used in errors.
func ParseNCCLTopo(name string, data []byte) (*NCCLTopo, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errorf(name, 0, "file is empty: expected NCCL topology XML (<system>)")
	}
	if !isText(data) {
		return nil, errorf(name, 0, "file is binary: expected NCCL topology XML (<system>)")
	}
	p := &ncclParser{name: name, busLine: map[string]int{}, numaSet: map[int]int{}, unknown: map[string]bool{},
		devSeen: map[int]int{}, netSeen: map[string]int{}}
	// encoding/xml reads a byte-order mark as text; it is not.
	dec := xml.NewDecoder(bytes.NewReader(bytes.TrimPrefix(data, []byte("\ufeff"))))
	stack := []int{}
	sawRoot := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		line, _ := dec.InputPos()
		if err != nil {
			var se *xml.SyntaxError
			if errors.As(err, &se) {
				return nil, errorf(name, se.Line, "broken XML: %s", se.Msg)
			}
			return nil, errorf(name, line, "broken XML: %v", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			parent := -1
			if len(stack) > 0 {
				parent = stack[len(stack)-1]
			} else if sawRoot {
				return nil, errorf(name, line, "<%s> after the end of <system>: expected one root element", t.Name.Local)
			}
			sawRoot = true
			if len(stack) >= ncclMaxDepth {
				return nil, errorf(name, line, "elements nest deeper than %d: expected an NCCL topology", ncclMaxDepth)
			}
			idx, err := p.start(t, parent, line)
			if err != nil {
				return nil, err
			}
			stack = append(stack, idx)
		case xml.EndElement:
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		case xml.CharData:
			if len(stack) == 0 && len(bytes.TrimSpace(t)) > 0 {
				line, _ := dec.InputPos()
				return nil, errorf(name, line, "text outside <system>: expected NCCL topology XML")
			}
		}
	}
	if !sawRoot {
		return nil, errorf(name, 0, "no elements: expected NCCL topology XML (<system>)")
	}
	if len(stack) > 0 {
		line, _ := dec.InputPos()
		return nil, errorf(name, line, "file ends inside <%s>: truncated?", p.tree[stack[len(stack)-1]].name)
	}
	return p.finish()
}

func ncclAttr(t xml.StartElement, key string) (string, bool) {
	for _, a := range t.Attr {
		if a.Name.Local == key {
			return a.Value, true
		}
	}
	return "", false
}

// ncclInt reads an integer attribute; absent gives def.
func (p *ncclParser) ncclInt(t xml.StartElement, key string, def, lo, hi int, line int) (int, error) {
	v, ok := ncclAttr(t, key)
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < lo || n > hi {
		return 0, errorf(p.name, line, "<%s %s=%q>: expected an integer from %d to %d", t.Name.Local, key, v, lo, hi)
	}
	return n, nil
}

// start records an element and checks that it sits where NCCL puts it.
func (p *ncclParser) start(t xml.StartElement, parent, line int) (int, error) {
	name := t.Name.Local
	e := ncclElem{name: name, line: line, parent: parent, gpu: -1, numa: -1}
	var par *ncclElem
	if parent >= 0 {
		par = &p.tree[parent]
		e.depth = par.depth + 1
		e.numa = par.numa
	}
	parentName := ""
	if par != nil {
		parentName = par.name
	} else if name != "system" {
		if name == "graphs" {
			return 0, errorf(p.name, line, "this is an NCCL graph file (NCCL_GRAPH_FILE: rings and trees), not a topology: expected <system> (NCCL_TOPO_FILE)")
		}
		return 0, errorf(p.name, line, "root element <%s>: expected <system> of an NCCL topology file", name)
	}
	want := func(what string) error {
		where := "at the top"
		if par != nil {
			where = "inside <" + parentName + ">"
		}
		return errorf(p.name, line, "<%s> %s: expected it inside %s", name, where, what)
	}
	switch name {
	case "system":
		if par != nil {
			return 0, want("nothing (it is the root)")
		}
	case "cpu":
		if parentName != "system" {
			return 0, want("<system>")
		}
		numa, err := p.ncclInt(t, "numaid", -1, 0, 1<<16, line)
		if err != nil {
			return 0, err
		}
		if numa >= 0 {
			if prev, dup := p.numaSet[numa]; dup {
				return 0, errorf(p.name, line, "<cpu numaid=\"%d\"> appears twice (first at line %d)", numa, prev)
			}
			p.numaSet[numa] = line
		}
		e.numa = numa
		p.topo.NUMANodes = append(p.topo.NUMANodes, numa)
	case "pci":
		if parentName != "cpu" && parentName != "pci" {
			return 0, want("<cpu> or <pci>")
		}
		if err := p.pci(&e, t, line); err != nil {
			return 0, err
		}
	case "gpu":
		if par == nil || !par.isPCI {
			return 0, errorf(p.name, line, "<gpu> without a PCI parent: expected <gpu> inside <pci busid=...>")
		}
		dev, err := p.ncclInt(t, "dev", -1, 0, 1<<16, line)
		if err != nil {
			return 0, err
		}
		sm, err := p.ncclInt(t, "sm", 0, 0, 1<<16, line)
		if err != nil {
			return 0, err
		}
		if par.gpuElem {
			return 0, errorf(p.name, line, "second <gpu> in <pci busid=%q>: expected one GPU per PCI device", par.busID)
		}
		par.gpuElem = true
		g := par.gpu
		if g < 0 {
			if g, err = p.addGPU(parent, line); err != nil {
				return 0, err
			}
			p.gpus[g].Model = ncclModel(xml.StartElement{Attr: par.attrs})
		}
		if dev >= 0 {
			if other, dup := p.devSeen[dev]; dup {
				return 0, errorf(p.name, line, "<gpu dev=\"%d\"> appears twice (also in <pci busid=%q>)", dev, p.gpus[other].BusID)
			}
			p.devSeen[dev] = g
		}
		p.gpuDev[g] = dev
		p.gpus[g].SM = sm
	case "nvlink", "c2c":
		if parentName != "gpu" {
			return 0, want("<gpu>")
		}
	case "nic":
		if parentName != "pci" && parentName != "cpu" {
			return 0, want("<pci> or <cpu>")
		}
	case "net":
		if parentName != "nic" {
			return 0, want("<nic>")
		}
		if err := p.net(t, parent, line); err != nil {
			return 0, err
		}
	default:
		if !p.unknown[name] {
			p.unknown[name] = true
			p.topo.Warnings = append(p.topo.Warnings, fmt.Sprintf("line %d: skipped <%s>, an element this loader does not know", line, name))
		}
	}
	p.tree = append(p.tree, e)
	idx := len(p.tree) - 1
	if e.isPCI && e.class>>16 == 0x03 {
		g, err := p.addGPU(idx, line)
		if err != nil {
			return 0, err
		}
		p.gpus[g].Model = ncclModel(t)
	}
	return idx, nil
}

func (p *ncclParser) pci(e *ncclElem, t xml.StartElement, line int) error {
	e.isPCI = true
	e.attrs = t.Attr
	bus, ok := ncclAttr(t, "busid")
	bus = strings.ToLower(strings.TrimSpace(bus))
	if !ok || !ncclBusRe.MatchString(bus) {
		return errorf(p.name, line, "<pci busid=%q>: expected a PCI bus ID such as 0001:00:00.0", bus)
	}
	if prev, dup := p.busLine[bus]; dup {
		return errorf(p.name, line, "PCI bus ID %s appears twice (first at line %d)", bus, prev)
	}
	p.busLine[bus] = line
	e.busID = bus
	if cl, ok := ncclAttr(t, "class"); ok {
		v, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(cl)), "0x"), 16, 32)
		if err != nil || v > 0xffffff {
			return errorf(p.name, line, "<pci class=%q>: expected a PCI class code such as 0x030200", cl)
		}
		e.class = v
	}
	if e.class>>8 == 0x0604 {
		p.topo.PCISwitches++
	}
	if e.class>>16 == 0x02 && len(p.nics)+p.pciNICs >= ncclMaxNICs {
		return errorf(p.name, line, "more than %d NICs in one node", ncclMaxNICs)
	}
	if e.class>>16 == 0x02 {
		p.pciNICs++
	}
	return nil
}

// ncclModel names a GPU by its PCI IDs, "" when unknown.
func ncclModel(t xml.StartElement) string {
	vendor, _ := ncclAttr(t, "vendor")
	dev, _ := ncclAttr(t, "device")
	v, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(dev)), "0x"), 16, 32)
	if err != nil || !strings.EqualFold(strings.TrimSpace(vendor), "0x10de") {
		return ""
	}
	return ncclModels[v]
}

// addGPU records the GPU of element at (a <pci>).
func (p *ncclParser) addGPU(at, line int) (int, error) {
	if len(p.gpus) == ncclMaxGPUs {
		return 0, errorf(p.name, line, "more than %d GPUs in one node", ncclMaxGPUs)
	}
	e := &p.tree[at]
	p.gpus = append(p.gpus, NCCLGPU{BusID: e.busID, NUMA: e.numa, NIC: -1})
	p.gpuAt = append(p.gpuAt, at)
	p.gpuDev = append(p.gpuDev, -1)
	e.gpu = len(p.gpus) - 1
	return e.gpu, nil
}

// net records a <net> of a <nic>.
func (p *ncclParser) net(t xml.StartElement, nicElem, line int) error {
	nic := &p.tree[nicElem]
	n := NCCLNIC{NUMA: nic.numa, Dev: -1}
	n.Name, _ = ncclAttr(t, "name")
	n.Name = strings.TrimSpace(n.Name)
	var err error
	if n.Dev, err = p.ncclInt(t, "dev", -1, 0, 1<<16, line); err != nil {
		return err
	}
	if n.Port, err = p.ncclInt(t, "port", 0, 0, 255, line); err != nil {
		return err
	}
	if s, ok := ncclAttr(t, "speed"); ok {
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || v < 0 || v > 1e9 || math.IsNaN(v) {
			return errorf(p.name, line, "<net speed=%q>: expected the speed in Mb/s (400000 for 400 Gb/s)", s)
		}
		n.SpeedGbps = v / 1000
	}
	gdr, _ := ncclAttr(t, "gdr")
	n.GUID, _ = ncclAttr(t, "guid")
	guid := strings.TrimLeft(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(n.GUID)), "0x"), "0")
	n.RDMA = strings.TrimSpace(gdr) == "1" || guid != ""
	at := nicElem
	if par := nic.parent; par >= 0 && p.tree[par].isPCI {
		pci := &p.tree[par]
		pci.hasNet = true
		n.BusID = pci.busID
		n.RDMA = n.RDMA || pci.class>>8 == 0x0207
		at = par
	}
	if n.Name != "" {
		key := n.Name + ":" + strconv.Itoa(n.Port)
		if prev, dup := p.netSeen[key]; dup {
			return errorf(p.name, line, "<net name=%q> appears twice (first at line %d)", n.Name, prev)
		}
		p.netSeen[key] = line
	}
	if len(p.nics) == ncclMaxNICs {
		return errorf(p.name, line, "more than %d NICs in one node", ncclMaxNICs)
	}
	p.nics = append(p.nics, n)
	p.nicAt = append(p.nicAt, at)
	return nil
}

// finish adds the PCI NICs that name no <net>, numbers GPUs and NICs, and
// derives the affinity.
func (p *ncclParser) finish() (*NCCLTopo, error) {
	for i := range p.tree {
		e := &p.tree[i]
		if e.isPCI && e.class>>16 == 0x02 && !e.hasNet {
			p.nics = append(p.nics, NCCLNIC{Dev: -1, BusID: e.busID, NUMA: e.numa, RDMA: e.class>>8 == 0x0207})
			p.nicAt = append(p.nicAt, i)
		}
	}
	if len(p.gpus) == 0 {
		return nil, errorf(p.name, 0, "no GPUs: expected <pci class=\"0x030200\"> or <gpu> elements under <cpu>")
	}
	// GPU order: dev when every GPU has one, else bus ID.
	gi := ncclOrder(len(p.gpus), p.gpuDev, func(i int) string { return p.gpus[i].BusID })
	nicDev := make([]int, len(p.nics))
	for i, n := range p.nics {
		nicDev[i] = n.Dev
	}
	ni := ncclOrder(len(p.nics), nicDev, func(i int) string { return p.nics[i].BusID })
	t := &p.topo
	newNIC := make([]int, len(p.nics))
	for k, i := range ni {
		newNIC[i] = k
		t.NICs = append(t.NICs, p.nics[i])
	}
	nicAt := make([]int, len(ni))
	for k, i := range ni {
		nicAt[k] = p.nicAt[i]
	}
	for k, i := range gi {
		g := p.gpus[i]
		g.Dev = k
		if p.gpuDev[i] >= 0 {
			g.Dev = p.gpuDev[i]
		}
		t.GPUs = append(t.GPUs, g)
	}
	gpuAt := make([]int, len(gi))
	for k, i := range gi {
		gpuAt[k] = p.gpuAt[i]
	}
	p.affinity(gpuAt, nicAt)
	return t, nil
}

// ncclOrder sorts indexes by dev when all have one, else by key.
func ncclOrder(n int, dev []int, key func(int) string) []int {
	idx := make([]int, n)
	all := true
	for i := range idx {
		idx[i] = i
		all = all && dev[i] >= 0
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		if all {
			return dev[a] - dev[b]
		}
		ka, kb := key(a), key(b)
		switch {
		case ka == "" && kb != "":
			return 1
		case kb == "" && ka != "":
			return -1
		}
		return strings.Compare(ka, kb)
	})
	return idx
}

// affinity gives each GPU the rail under the deepest element it shares
// with any rail; GPUs sharing that element take its rails in turn.
func (p *ncclParser) affinity(gpuAt, nicAt []int) {
	t := &p.topo
	// The rails under each element, in NIC order.
	under := map[int][]int{}
	for i, n := range t.NICs {
		if !n.RDMA {
			continue
		}
		for e := nicAt[i]; e >= 0; e = p.tree[e].parent {
			under[e] = append(under[e], i)
		}
	}
	if len(under) == 0 {
		return
	}
	turn := map[int]int{} // shared element -> GPUs served so far
	for g := range t.GPUs {
		for e := gpuAt[g]; e >= 0; e = p.tree[e].parent {
			cands := under[e]
			if len(cands) == 0 {
				continue
			}
			t.GPUs[g].NIC = cands[turn[e]%len(cands)]
			turn[e]++
			t.GPUs[g].Path = p.pathName(gpuAt[g], e)
			break
		}
	}
}

// pathName names the way from a GPU's element up to the shared one.
func (p *ncclParser) pathName(gpu, shared int) string {
	e := &p.tree[shared]
	switch {
	case e.name == "system":
		return "SYS"
	case e.name == "cpu":
		return "PHB"
	case shared == gpu || p.tree[gpu].parent == shared:
		return "PIX"
	}
	return "PXB"
}
