package topology

// Slurm topology.conf (topology/tree and topology/block) and, through the
// same core, topology.yaml (slurmyaml.go).
//
// How Slurm's description maps to the fabric model:
//
//   - Slurm knows nothing of GPUs. Every node gets one node class,
//     SlurmOptions.NodeClass, by default DefaultSlurmNodeClass ("slurm-node",
//     GPU model "unknown", 8 GPUs, no rails).
//   - Tree (SwitchName=... Switches=... | Nodes=...). A switch with Nodes= is
//     a leaf; a switch with both Nodes= and Switches= is an error, as in
//     Slurm. Each switch becomes one Domain with Switches 1 and SwitchNames
//     [its name], so the summary counts switches. Levels follow the height
//     above the leaves: height 0 is LevelLeaf, 1 LevelBlock, 2 LevelPod; a
//     single root above the leaves is LevelCluster. Several roots (or a
//     lone leaf switch) get a synthetic cluster domain "cluster" (Switches
//     0) above them. A tree taller than leaf/block/pod/cluster is an error.
//     Domains are added parents first in depth-first order, so the nodes of
//     one subtree get consecutive IDs.
//   - Checked before anything is built: a switch defined twice, a child
//     never defined, a switch under two parents, loops, a node under two
//     leaves, bad hostlists. A switch with nothing under it (Slurm allows
//     empty leaf switches) is dropped with a warning.
//   - LinkSpeed=N is stored verbatim as the switch domain's UplinkGbps.
//     Slurm's unit is arbitrary ("relative"), so only ratios between link
//     speeds mean anything: the summary's oversubscription of a level is
//     then the ratio of speeds in to speed up, and there is no bisection
//     figure since Slurm gives no node injection bandwidth.
//   - Block (BlockName=... Nodes=..., BlockSizes=...). Slurm's blocks are
//     groups of nodes on a fast interconnect, such as the NVLink racks of
//     GB200 NVL72. A file with blocks only becomes one cluster (Switches 0)
//     with each block a leaf domain (Switches 0) and an NVLink domain.
//     A file with a tree and blocks uses the tree for the switch domains and
//     each block that sits under one leaf as a multi-node NVLink domain; a
//     block that spans leaves or names nodes outside the tree is set aside
//     with a warning.
//   - BlockSizes is checked as Slurm checks it (each size a power-of-two
//     multiple of the first, the base block size; every block at least the
//     base size, which without BlockSizes is the first block's size) and is
//     otherwise not modelled: the aggregation of blocks into larger blocks
//     is Slurm's placement policy, not a property of the fabric.
//   - RingName= lines (topology/ring) are skipped with a warning; a file with
//     nothing else is an error. Include lines are refused (the included file
//     is not at hand).
//
// Syntax follows Slurm's parser: keys are case-insensitive, "#" starts a
// comment, a line ending in "\" continues on the next, values may be
// double-quoted, and a statement starts with its kind (SwitchName=,
// BlockName=, BlockSizes=, RingName=). Anything else is an error that
// names the file and line. The parse is linear in the size of the file and
// the names it expands to.

import (
	"bytes"
	"fmt"
	"math/bits"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// DefaultSlurmNodeClass is the hardware given to nodes read from Slurm files,
// which do not say what a node holds.
var DefaultSlurmNodeClass = NodeClass{Name: "slurm-node", GPUModel: "unknown", GPUs: 8}

// SlurmOptions tunes the Slurm loaders.
type SlurmOptions struct {
	// NodeClass is given to every node. Without a name and GPU count it is
	// DefaultSlurmNodeClass; without a name, it takes that class's name.
	NodeClass NodeClass
}

func (o SlurmOptions) nodeClass() NodeClass {
	c := o.NodeClass
	if c.Name == "" && c.GPUs == 0 {
		return DefaultSlurmNodeClass
	}
	if c.Name == "" {
		c.Name = DefaultSlurmNodeClass.Name
	}
	return c
}

// maxSlurmNames bounds the names one file may expand to in total (nodes and
// switch references: 262,144, the nodes of a 2M-GPU fleet), so that a few
// short hostlists cannot make the parser spend seconds and gigabytes.
const maxSlurmNames = 1 << 18

// maxSlurmSwitchName is Slurm's limit on switch names (HOST_NAME_MAX).
const maxSlurmSwitchName = 64

// ParseSlurmConf parses a Slurm topology.conf (topology/tree, topology/block).
// name is used in errors and to name the fabric.
func ParseSlurmConf(name string, data []byte, opts SlurmOptions) (*Fabric, error) {
	in, err := readSlurmConf(name, data)
	if err != nil {
		return nil, err
	}
	return in.build(slurmFabricName(name), opts)
}

func parseSlurmConf(name string, data []byte) (*Fabric, error) {
	return ParseSlurmConf(name, data, SlurmOptions{})
}

// slurmFabricName names a fabric after its file.
func slurmFabricName(file string) string {
	base := filepath.Base(file)
	for _, ext := range []string{".conf", ".yaml", ".yml", ".topology"} {
		if s, ok := strings.CutSuffix(base, ext); ok && s != "" {
			base = s
		}
	}
	return base
}

// slurmSwitch is one SwitchName statement (or a switch of topology.yaml).
type slurmSwitch struct {
	name         string
	line         int
	nodes        string // hostlist, "" when absent
	children     string // hostlist, "" when absent
	nodesLine    int
	childrenLine int
	linkSpeed    float64
	hasLinkSpeed bool
}

// slurmBlock is one BlockName statement.
type slurmBlock struct {
	name  string
	line  int
	nodes string
}

// slurmInput is what a Slurm file says, before any check across statements.
type slurmInput struct {
	file           string
	switches       []slurmSwitch
	blocks         []slurmBlock
	blockSizes     []int
	blockSizesLine int
	rings          []string // RingName values, skipped
	warnings       []string
	names          int  // names expanded so far, against maxSlurmNames
	yaml           bool // read from topology.yaml: errors use its key names
}

// key names a key as the file writes it: "Nodes=" in topology.conf,
// "nodes" in topology.yaml.
func (in *slurmInput) key(conf, yaml string) string {
	if in.yaml {
		return yaml
	}
	return conf + "="
}

// switchEntry says how the file defines switch name.
func (in *slurmInput) switchEntry(name string) string {
	if in.yaml {
		return "a switch: " + name + " entry"
	}
	return "a SwitchName=" + name + " line"
}

// readSlurmConf splits topology.conf into statements.
func readSlurmConf(file string, data []byte) (*slurmInput, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errorf(file, 0, "file is empty: expected SwitchName= or BlockName= lines")
	}
	if err := checkTextLines(file, data, "topology.conf"); err != nil {
		return nil, err
	}
	in := &slurmInput{file: file}
	sawBlockSizes := false
	var (
		stmt      strings.Builder
		stmtLine  int
		continued bool
	)
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		var raw []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			raw, data = data[:i], data[i+1:]
		} else {
			raw, data = data, nil
		}
		line := string(bytes.TrimSuffix(raw, []byte("\r")))
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimRight(line, " \t\r")
		if !continued {
			stmt.Reset()
			stmtLine = lineNo
		}
		cont := strings.HasSuffix(line, "\\")
		if cont {
			line = line[:len(line)-1]
		}
		stmt.WriteString(line)
		stmt.WriteByte(' ')
		continued = cont
		if continued {
			continue
		}
		if err := in.statement(stmt.String(), stmtLine, &sawBlockSizes); err != nil {
			return nil, err
		}
	}
	if continued {
		return nil, errorf(file, lineNo, "file ends after a '\\' continuation: expected the rest of the statement")
	}
	if len(in.switches) == 0 && len(in.blocks) == 0 {
		if len(in.rings) > 0 {
			return nil, errorf(file, 0, "only RingName= lines (topology/ring): rings are not modelled; expected SwitchName= or BlockName= lines")
		}
		if sawBlockSizes {
			return nil, errorf(file, in.blockSizesLine, "BlockSizes= without any BlockName= line")
		}
		return nil, errorf(file, 0, "no SwitchName= or BlockName= lines")
	}
	return in, nil
}

// slurmKV is one KEY=VALUE of a statement.
type slurmKV struct{ key, value string }

// splitSlurmStatement cuts a statement into KEY=VALUE pairs the way Slurm's
// parser does: spaces may surround "=", a value is a double-quoted string or
// a run of non-space characters.
func splitSlurmStatement(s string) ([]slurmKV, error) {
	var kvs []slurmKV
	i := 0
	for {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i == len(s) {
			return kvs, nil
		}
		start := i
		for i < len(s) && isSlurmKeyByte(s[i]) {
			i++
		}
		key := s[start:i]
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if key == "" || i == len(s) || s[i] != '=' {
			tok := s[start:]
			if j := strings.IndexAny(tok, " \t"); j >= 0 {
				tok = tok[:j]
			}
			if len(kvs) == 0 && strings.EqualFold(key, "include") {
				return nil, fmt.Errorf("Include is not supported: inline the included file")
			}
			return nil, fmt.Errorf("expected KEY=VALUE, got %q", tok)
		}
		i++ // '='
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		var value string
		if i < len(s) && s[i] == '"' {
			end := strings.IndexByte(s[i+1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("%s=: quoted value without a closing '\"'", key)
			}
			value = s[i+1 : i+1+end]
			i += end + 2
		} else {
			vs := i
			for i < len(s) && s[i] != ' ' && s[i] != '\t' {
				i++
			}
			value = s[vs:i]
		}
		if strings.TrimSpace(value) == "" {
			return nil, fmt.Errorf("%s= has no value", key)
		}
		kvs = append(kvs, slurmKV{key, value})
	}
}

func isSlurmKeyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// statement records one logical line of topology.conf.
func (in *slurmInput) statement(s string, line int, sawBlockSizes *bool) error {
	kvs, err := splitSlurmStatement(s)
	if err != nil {
		return errorf(in.file, line, "%v", err)
	}
	if len(kvs) == 0 {
		return nil
	}
	head := kvs[0]
	rest := kvs[1:]
	seen := map[string]bool{}
	for _, kv := range rest {
		k := strings.ToLower(kv.key)
		if seen[k] {
			return errorf(in.file, line, "%s= given twice", kv.key)
		}
		seen[k] = true
	}
	switch strings.ToLower(head.key) {
	case "switchname":
		sw := slurmSwitch{name: head.value, line: line, nodesLine: line, childrenLine: line}
		for _, kv := range rest {
			switch strings.ToLower(kv.key) {
			case "nodes":
				sw.nodes = kv.value
			case "switches":
				sw.children = kv.value
			case "linkspeed":
				v, err := strconv.ParseUint(kv.value, 10, 32)
				if err != nil {
					return errorf(in.file, line, "LinkSpeed=%s: expected a whole number from 0 to %d", kv.value, uint32(1<<32-1))
				}
				sw.linkSpeed, sw.hasLinkSpeed = float64(v), true
			default:
				return errorf(in.file, line, "SwitchName=%s: unknown key %q: expected Switches=, Nodes= or LinkSpeed=", head.value, kv.key)
			}
		}
		in.switches = append(in.switches, sw)
	case "blockname":
		bl := slurmBlock{name: head.value, line: line}
		for _, kv := range rest {
			if strings.ToLower(kv.key) != "nodes" {
				return errorf(in.file, line, "BlockName=%s: unknown key %q: expected Nodes=", head.value, kv.key)
			}
			bl.nodes = kv.value
		}
		in.blocks = append(in.blocks, bl)
	case "blocksizes":
		if len(rest) > 0 {
			return errorf(in.file, line, "BlockSizes= stands alone on its line, got %s= after it", rest[0].key)
		}
		if *sawBlockSizes {
			return errorf(in.file, line, "BlockSizes= given twice (first on line %d)", in.blockSizesLine)
		}
		*sawBlockSizes = true
		sizes, err := parseBlockSizes(head.value)
		if err != nil {
			return errorf(in.file, line, "BlockSizes=%s: %v", head.value, err)
		}
		in.blockSizes, in.blockSizesLine = sizes, line
	case "ringname":
		for _, kv := range rest {
			if strings.ToLower(kv.key) != "nodes" {
				return errorf(in.file, line, "RingName=%s: unknown key %q: expected Nodes=", head.value, kv.key)
			}
		}
		in.rings = append(in.rings, head.value)
	default:
		return errorf(in.file, line, "unknown statement %s=: expected SwitchName=, BlockName=, BlockSizes= or RingName=", head.key)
	}
	return nil
}

// parseBlockSizes reads "8,16,32": the base block size, then larger sizes
// that are each the base times a power of two, as Slurm requires.
func parseBlockSizes(s string) ([]int, error) {
	var sizes []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("%q is not a positive whole number", f)
		}
		sizes = append(sizes, v)
	}
	return sizes, checkBlockSizes(sizes)
}

func checkBlockSizes(sizes []int) error {
	if len(sizes) == 0 {
		return fmt.Errorf("no sizes")
	}
	base := sizes[0]
	for i, v := range sizes {
		if v <= 0 {
			return fmt.Errorf("size %d is not positive", v)
		}
		if v%base != 0 || bits.OnesCount(uint(v/base)) != 1 || v/base > 1<<15 {
			return fmt.Errorf("size %d is not the base size %d times a power of two (at most 2^15)", v, base)
		}
		if i > 0 && v <= sizes[i-1] {
			return fmt.Errorf("sizes must grow: %d after %d", v, sizes[i-1])
		}
	}
	return nil
}

// expand expands the hostlist given to key ("Nodes=", "nodes:") by the
// statement of kind and name, counting against the file's budget of names.
func (in *slurmInput) expand(expr string, line int, kind, name, key string) ([]string, error) {
	names, err := ExpandHostlist(expr)
	if err != nil {
		return nil, errorf(in.file, line, "%s %q: %s: %v", kind, name, key, err)
	}
	if len(names) == 0 {
		return nil, errorf(in.file, line, "%s %q: %s: hostlist %q names nothing", kind, name, key, expr)
	}
	in.names += len(names)
	if in.names > maxSlurmNames {
		return nil, errorf(in.file, line, "%s %q: %s: the file names more than %d nodes and switches", kind, name, key, maxSlurmNames)
	}
	return names, nil
}

// checkSlurmName refuses switch and block names that hostlists could not refer to.
func checkSlurmName(kind, name string) error {
	if strings.ContainsAny(name, "[],") {
		return fmt.Errorf("%s name %q holds hostlist syntax ('[', ']' or ','): name one %s per statement", kind, name, kind)
	}
	if strings.ContainsAny(name, " \t\r\n") {
		return fmt.Errorf("%s name %q holds white space", kind, name)
	}
	return nil
}

// build checks the statements against each other and assembles the fabric.
func (in *slurmInput) build(fabricName string, opts SlurmOptions) (*Fabric, error) {
	b := NewBuilder(fabricName)
	cls := b.AddClass(opts.nodeClass())
	if c := b.f.Classes[cls]; c.GPUs < 1 || c.GPUs > 64 {
		return nil, errorf(in.file, 0, "node class %q: gpus must be between 1 and 64, got %d", c.Name, c.GPUs)
	}
	blockNodes, err := in.checkBlocks()
	if err != nil {
		return nil, err
	}
	for _, w := range in.warnings {
		b.Warn("%s", w)
	}
	if len(in.rings) > 0 {
		b.Warn("%d RingName= statement(s) skipped (%s): topology/ring is not modelled", len(in.rings), listSome(in.rings))
	}
	if len(in.switches) > 0 {
		if err := in.buildTree(b, cls); err != nil {
			return nil, err
		}
		in.blocksAsNVLink(b, blockNodes)
	} else if err := in.buildBlocks(b, cls, blockNodes); err != nil {
		return nil, err
	}
	f, err := b.Build()
	if err != nil {
		return nil, errorf(in.file, 0, "%v", err)
	}
	return f, nil
}

// treeSwitch is a switch being checked.
type treeSwitch struct {
	parent   int32 // -1 for a root
	children []int32
	nodes    []string
	height   int32
	keep     bool // has nodes somewhere below
	dom      DomainID
}

func (in *slurmInput) buildTree(b *Builder, cls int32) error {
	sws := in.switches
	index := make(map[string]int32, len(sws))
	for i := range sws {
		s := &sws[i]
		if err := checkSlurmName("switch", s.name); err != nil {
			return errorf(in.file, s.line, "%v", err)
		}
		if len(s.name) > maxSlurmSwitchName {
			return errorf(in.file, s.line, "switch name %q is longer than %d characters", s.name, maxSlurmSwitchName)
		}
		if prev, dup := index[s.name]; dup {
			return errorf(in.file, s.line, "switch %q defined twice (first on line %d)", s.name, sws[prev].line)
		}
		index[s.name] = int32(i)
		if s.nodes != "" && s.children != "" {
			return errorf(in.file, s.line, "switch %q has both %s and %s: only a leaf switch holds nodes", s.name, in.key("Switches", "children"), in.key("Nodes", "nodes"))
		}
	}
	ts := make([]treeSwitch, len(sws))
	for i := range ts {
		ts[i].parent = -1
		ts[i].dom = NoDomain
	}
	totalNodes := 0
	for i := range sws {
		s := &sws[i]
		if s.children != "" {
			kids, err := in.expand(s.children, s.childrenLine, "switch", s.name, in.key("Switches", "children"))
			if err != nil {
				return err
			}
			for _, k := range kids {
				c, ok := index[k]
				switch {
				case !ok:
					return errorf(in.file, s.childrenLine, "switch %q lists child switch %q, which is never defined (expected %s)", s.name, k, in.switchEntry(k))
				case c == int32(i):
					return errorf(in.file, s.childrenLine, "switch %q lists itself as a child (%s): switches must form a tree", s.name, in.key("Switches", "children"))
				case ts[c].parent == int32(i):
					return errorf(in.file, s.childrenLine, "switch %q lists child switch %q twice", s.name, k)
				case ts[c].parent >= 0:
					p := &sws[ts[c].parent]
					return errorf(in.file, s.childrenLine, "switch %q is listed under both %q (line %d) and %q: a switch has one parent", k, p.name, p.line, s.name)
				}
				ts[c].parent = int32(i)
				ts[i].children = append(ts[i].children, c)
			}
		}
		if s.nodes != "" {
			nodes, err := in.expand(s.nodes, s.nodesLine, "switch", s.name, in.key("Nodes", "nodes"))
			if err != nil {
				return err
			}
			ts[i].nodes = nodes
			totalNodes += len(nodes)
		}
	}

	// Depth-first, parents before children, from the roots in file order.
	// Switches not reached from a root sit on a loop.
	order := make([]int32, 0, len(sws))
	var roots []int32
	stack := make([]int32, 0, 64)
	for i := range ts {
		if ts[i].parent >= 0 {
			continue
		}
		roots = append(roots, int32(i))
		stack = append(stack[:0], int32(i))
		for len(stack) > 0 {
			s := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			order = append(order, s)
			for k := len(ts[s].children) - 1; k >= 0; k-- {
				stack = append(stack, ts[s].children[k])
			}
		}
	}
	if len(order) < len(sws) {
		reached := make([]bool, len(sws))
		for _, s := range order {
			reached[s] = true
		}
		return in.loopError(ts, reached)
	}

	// Heights bottom-up; switches with no nodes below are dropped.
	var dropped []string
	for k := len(order) - 1; k >= 0; k-- {
		t := &ts[order[k]]
		if len(t.nodes) > 0 {
			t.keep = true
			continue
		}
		for _, c := range t.children {
			if ts[c].keep {
				t.keep = true
				t.height = max(t.height, ts[c].height+1)
			}
		}
		if !t.keep {
			dropped = append(dropped, sws[order[k]].name)
		}
	}
	if len(dropped) > 0 {
		b.Warn("%d switch(es) with no nodes below them dropped: %s", len(dropped), listSome(dropped))
	}
	var kept []int32
	for _, r := range roots {
		if ts[r].keep {
			kept = append(kept, r)
		}
	}
	if len(kept) == 0 {
		return errorf(in.file, 0, "no switch has nodes below it: expected a leaf switch with %s", in.key("Nodes", "nodes"))
	}

	// Levels: one root above the leaves is the cluster; otherwise a logical
	// cluster goes on top and the tallest tree may have three tiers.
	mid := [...]Level{LevelLeaf, LevelBlock, LevelPod}
	single := len(kept) == 1 && ts[kept[0]].height > 0
	parent := NoDomain
	if !single {
		id, err := b.AddDomain(Domain{Name: in.freeDomainName("cluster"), Level: LevelCluster, Parent: NoDomain})
		if err != nil {
			return errorf(in.file, 0, "%v", err)
		}
		parent = id
	}
	for _, s := range order {
		t := &ts[s]
		if !t.keep {
			continue
		}
		sw := &sws[s]
		var lvl Level
		switch {
		case single && s == kept[0]:
			if t.height > int32(len(mid)) {
				return errorf(in.file, sw.line, "the tree under %q has %d switch tiers: at most 4 are modelled (leaf, block, pod, cluster)", sw.name, t.height+1)
			}
			lvl = LevelCluster
		case t.height < int32(len(mid)):
			lvl = mid[t.height]
		default:
			return errorf(in.file, sw.line, "the tree has more switch tiers than modelled: %q is %d tiers above the leaves, at most %d fit under a cluster (leaf, block, pod)", sw.name, t.height, len(mid)-1)
		}
		p := parent
		if t.parent >= 0 {
			p = ts[t.parent].dom
		}
		d := Domain{Name: sw.name, Level: lvl, Parent: p, Switches: 1, SwitchNames: []string{sw.name}}
		if sw.hasLinkSpeed {
			d.UplinkGbps = sw.linkSpeed
		}
		id, err := b.AddDomain(d)
		if err != nil {
			return errorf(in.file, sw.line, "%v", err)
		}
		t.dom = id
	}
	// The builder finds nodes named twice; the error names both
	// statements, the later one as the culprit.
	b.Reserve(totalNodes)
	for _, s := range order {
		t := &ts[s]
		for _, n := range t.nodes {
			if _, err := b.AddNode(n, cls, t.dom); err != nil {
				if prev, dup := b.f.nodeByName[n]; dup {
					return in.nodeTwiceError(n, sws[s].name, b.f.Domains[b.f.Nodes[prev].Leaf].Name, index)
				}
				return errorf(in.file, sws[s].nodesLine, "%v", err)
			}
		}
	}
	return nil
}

// nodeTwiceError reports a node under two leaf switches (or twice under
// one) at the later of the two statements.
func (in *slurmInput) nodeTwiceError(node, sw1, sw2 string, index map[string]int32) error {
	a, b := &in.switches[index[sw1]], &in.switches[index[sw2]]
	if a == b {
		return errorf(in.file, a.nodesLine, "switch %q lists node %q twice", a.name, node)
	}
	if a.nodesLine < b.nodesLine || (a.nodesLine == b.nodesLine && index[sw1] < index[sw2]) {
		a, b = b, a
	}
	return errorf(in.file, a.nodesLine, "node %q is under both leaf switches %q (line %d) and %q: a node hangs from one leaf", node, b.name, b.nodesLine, a.name)
}

// loopError names a loop among the switches that no root reaches. Each of
// them has a parent, so following parents from one must come back round.
func (in *slurmInput) loopError(ts []treeSwitch, reached []bool) error {
	start := int32(-1)
	for i := range ts {
		if !reached[i] {
			start = int32(i)
			break
		}
	}
	seen := make([]bool, len(ts))
	s := start
	for !seen[s] {
		seen[s] = true
		s = ts[s].parent
	}
	// s is on the loop. Walk it once through the parents, then print it
	// from parent to child.
	path := []string{in.switches[s].name}
	line := in.switches[s].line
	for p := ts[s].parent; p != s; p = ts[p].parent {
		path = append(path, in.switches[p].name)
		line = min(line, in.switches[p].line)
	}
	path = append(path, in.switches[s].name)
	slices.Reverse(path)
	return errorf(in.file, line, "switch loop %s: switches must form a tree", strings.Join(path, " -> "))
}

// freeDomainName returns want, or want-N, whichever no switch or block uses.
func (in *slurmInput) freeDomainName(want string) string {
	used := func(n string) bool {
		for i := range in.switches {
			if in.switches[i].name == n {
				return true
			}
		}
		if len(in.switches) == 0 {
			for i := range in.blocks {
				if in.blocks[i].name == n {
					return true
				}
			}
		}
		return false
	}
	name := want
	for k := 1; used(name); k++ {
		name = fmt.Sprintf("%s-%d", want, k)
	}
	return name
}

// checkBlocks expands the blocks and checks them as Slurm does: unique
// names, nodes, at least the base block size each; and, for our model, no
// node in two blocks.
func (in *slurmInput) checkBlocks() ([][]string, error) {
	if len(in.blocks) == 0 {
		if in.blockSizesLine > 0 {
			in.warnings = append(in.warnings, "BlockSizes= without BlockName= lines ignored")
		}
		return nil, nil
	}
	out := make([][]string, len(in.blocks))
	names := make(map[string]int, len(in.blocks))
	owner := map[string]int{}
	base := 0
	if len(in.blockSizes) > 0 {
		base = in.blockSizes[0]
	}
	for i := range in.blocks {
		bl := &in.blocks[i]
		if err := checkSlurmName("block", bl.name); err != nil {
			return nil, errorf(in.file, bl.line, "%v", err)
		}
		if prev, dup := names[bl.name]; dup {
			return nil, errorf(in.file, bl.line, "block %q defined twice (first on line %d)", bl.name, in.blocks[prev].line)
		}
		names[bl.name] = i
		if bl.nodes == "" {
			return nil, errorf(in.file, bl.line, "block %q has no %s", bl.name, in.key("Nodes", "nodes"))
		}
		nodes, err := in.expand(bl.nodes, bl.line, "block", bl.name, in.key("Nodes", "nodes"))
		if err != nil {
			return nil, err
		}
		for _, n := range nodes {
			if prev, dup := owner[n]; dup {
				if prev == i {
					return nil, errorf(in.file, bl.line, "block %q lists node %q twice", bl.name, n)
				}
				return nil, errorf(in.file, bl.line, "node %q is in both blocks %q (line %d) and %q: a node belongs to one block", n, in.blocks[prev].name, in.blocks[prev].line, bl.name)
			}
			owner[n] = i
		}
		if base == 0 {
			base = len(nodes)
		}
		if len(nodes) < base {
			return nil, errorf(in.file, bl.line, "block %q has %d nodes, fewer than the base block size %d", bl.name, len(nodes), base)
		}
		out[i] = nodes
	}
	return out, nil
}

// buildBlocks makes a block-only fabric: a logical cluster over one leaf
// domain per block, each block also an NVLink domain.
func (in *slurmInput) buildBlocks(b *Builder, cls int32, blockNodes [][]string) error {
	root, err := b.AddDomain(Domain{Name: in.freeDomainName("cluster"), Level: LevelCluster, Parent: NoDomain})
	if err != nil {
		return errorf(in.file, 0, "%v", err)
	}
	for i := range in.blocks {
		bl := &in.blocks[i]
		leaf, err := b.AddDomain(Domain{Name: bl.name, Level: LevelLeaf, Parent: root})
		if err != nil {
			return errorf(in.file, bl.line, "%v", err)
		}
		ids := make([]NodeID, 0, len(blockNodes[i]))
		for _, n := range blockNodes[i] {
			id, err := b.AddNode(n, cls, leaf)
			if err != nil {
				return errorf(in.file, bl.line, "%v", err)
			}
			ids = append(ids, id)
		}
		if len(ids) > 1 {
			if err := b.AddNVLinkDomain(bl.name, ids); err != nil {
				return errorf(in.file, bl.line, "%v", err)
			}
		}
	}
	return nil
}

// blocksAsNVLink makes each block that sits under one leaf of the tree an
// NVLink domain, and warns about the others.
func (in *slurmInput) blocksAsNVLink(b *Builder, blockNodes [][]string) {
	var outside, spanning []string
	ids := []NodeID{}
	for i := range in.blocks {
		ids = ids[:0]
		ok := true
		for _, n := range blockNodes[i] {
			id, found := b.f.nodeByName[n]
			if !found {
				outside = append(outside, in.blocks[i].name)
				ok = false
				break
			}
			if len(ids) > 0 && b.f.Nodes[id].Leaf != b.f.Nodes[ids[0]].Leaf {
				spanning = append(spanning, in.blocks[i].name)
				ok = false
				break
			}
			ids = append(ids, id)
		}
		if !ok || len(ids) < 2 {
			continue
		}
		// Checked above: the nodes are distinct, in no other block, and
		// under one leaf, so this cannot fail.
		if err := b.AddNVLinkDomain(in.blocks[i].name, ids); err != nil {
			b.Warn("block %q: %v", in.blocks[i].name, err)
		}
	}
	if len(outside) > 0 {
		b.Warn("%d block(s) name nodes that are not in the switch tree and are not used as NVLink domains: %s", len(outside), listSome(outside))
	}
	if len(spanning) > 0 {
		b.Warn("%d block(s) span more than one leaf switch and are not used as NVLink domains: %s", len(spanning), listSome(spanning))
	}
}

// listSome lists up to five names, then how many more.
func listSome(names []string) string {
	const n = 5
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:n], ", "), len(names)-n)
}
