package topology

// Loading ibnetdiscover output (infiniband-diags) into the fabric model.
//
// The capture lists every switch, CA and router with its linked ports. It
// says nothing about GPUs, so the loader derives the switch tree and each
// host's rails, and takes the GPUs from a node class the caller passes
// (IBNetDiscoverOptions.Class; by default 8 GPUs of model "unknown", the
// HGX/DGX board every rail-optimised fabric is built for).
//
// Mapping (docs/formats-ib-nccl.md has the long form):
//
//   - Hosts. A CA whose node description reads "HOST HCA" (two words, as
//     rdma-ndd writes it: "a08-p1-dgx-04-c01 mlx5_5") is HCA HCA of compute
//     host HOST. Every other CA is set aside and counted in one warning:
//     SHARP aggregation nodes, firmware-default descriptions ("MT4129
//     ConnectX7 Mellanox Technologies": no host name), management hosts (UFM,
//     matched by IBNetDiscoverOptions.ManagementHosts), placeholder host names
//     (localhost, ubuntu), names shared by two machines (the same HCA name
//     twice), names that are not host names, and CAs not linked to a switch.
//   - Leaves. A switch with a compute host's HCA on a port is a leaf switch.
//     Leaf switches that share hosts form one leaf domain (union-find over
//     the hosts' HCAs): on a rail-optimised fabric that is the scalable unit,
//     HCA i of each of its hosts on leaf switch i. A group with more leaf
//     switches than any of its hosts has HCAs was joined by a host cabled
//     into two groups: that is an error naming the host.
//   - Upper tiers. Other switches get the tier of their distance (in switch
//     hops) from the nearest leaf: 1 spine, 2 core. At each tier, the
//     switches that share child domains form one domain; the single domain
//     of the top tier is the cluster, lower ones are blocks (tier 1) and pods
//     (tier 2). When the top tier splits, or some domain has no uplink, the
//     parts go under a cluster without switches and a warning says so.
//   - Bandwidth. "4xNDR" is 4 lanes of 100 Gb/s: 400 Gb/s. A domain's
//     UplinkGbps is the sum of its switches' links one tier up; a host's
//     RailGbps is its slowest HCA link. A link of unknown speed makes the sum
//     unknown (0), so the summary does not guess a bisection.
//   - Node classes. Hosts with the same HCA names and rail speed share a
//     class named CLASS-RAILSxGBPSg (ib-host-4x400g); HCAs holds the names
//     in natural order, which is the rail order.
//
// Errors name the line: syntax, duplicate GUIDs, ports out of range, links
// to nodes or ports the capture does not have, links whose two ends
// disagree, captures without switches or without compute hosts.

import (
	"bytes"
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// IBNetDiscoverOptions tunes ParseIBNetDiscover.
type IBNetDiscoverOptions struct {
	// Class is the hardware of the compute hosts. ibnetdiscover sees HCAs,
	// not GPUs: GPUModel, GPUs, GPUMemoryGiB, NVLinkGBps and GPURail come
	// from here, Rails, RailGbps and HCAs from the capture. Name prefixes
	// the class names. The zero value means DefaultIBClass.
	Class NodeClass
	// ManagementHosts matches host names that are not compute hosts. nil
	// means DefaultManagementHosts.
	ManagementHosts *regexp.Regexp
}

// DefaultIBClass is the hardware assumed for hosts found by ibnetdiscover:
// an 8-GPU board of unknown model.
var DefaultIBClass = NodeClass{Name: "ib-host", GPUModel: "unknown", GPUs: 8}

// DefaultManagementHosts matches the hosts of NVIDIA UFM, the fabric manager
// appliance that sits on leaf ports like a compute host.
var DefaultManagementHosts = regexp.MustCompile(`(?i)ufm`)

// ibPlaceholderHosts are host names an unconfigured machine reports; nodes
// so named cannot be told apart or reached by name.
var ibPlaceholderHosts = map[string]bool{
	"localhost": true, "localhost.localdomain": true, "ubuntu": true, "linux": true,
}

func parseIBNetDiscover(name string, data []byte) (*Fabric, error) {
	return ParseIBNetDiscover(name, data, IBNetDiscoverOptions{})
}

// ParseIBNetDiscover builds a fabric from ibnetdiscover output; name is used
// in errors and, without its extension, as the fabric's name.
func ParseIBNetDiscover(name string, data []byte, opts IBNetDiscoverOptions) (*Fabric, error) {
	c, err := scanIBNet(name, data)
	if err != nil {
		return nil, err
	}
	if err := c.link(); err != nil {
		return nil, err
	}
	return c.build(opts)
}

type ibKind uint8

const (
	ibSwitch ibKind = iota
	ibCA
	ibRouter
)

func (k ibKind) String() string {
	return [...]string{"switch", "CA", "router"}[k]
}

// ibMaxPorts bounds port numbers: they are 8-bit in InfiniBand.
const ibMaxPorts = 255

type ibNode struct {
	id     string
	kind   ibKind
	nports int
	desc   string
	sharp  bool // a SHARP aggregation node (inside a Quantum switch)
	line   int
	ports  []ibPort
	// byPort maps a port number to its index in ports, -1 when not
	// listed; built by link, as long as the highest port listed.
	byPort []int32
}

type ibPort struct {
	num      int
	peerID   string
	peer     int32 // node index, set by link
	peerPort int
	gbps     float64 // 0 when the speed is not given or not known
	line     int
}

type ibCapture struct {
	name  string
	nodes []ibNode
	byID  map[string]int32
}

// scanIBNet reads the lines of the capture.
func scanIBNet(name string, data []byte) (*ibCapture, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errorf(name, 0, "file is empty: expected ibnetdiscover output")
	}
	if !isText(data) {
		return nil, errorf(name, 0, "file is binary: expected ibnetdiscover output (text)")
	}
	c := &ibCapture{name: name, byID: map[string]int32{}}
	s := strings.TrimPrefix(string(data), "\ufeff") // a byte-order mark from an editor
	cur := int32(-1)
	for lineNo := 1; len(s) > 0; lineNo++ {
		var l string
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			l, s = s[:i], s[i+1:]
		} else {
			l, s = s, ""
		}
		t := strings.Trim(l, " \t\r")
		switch {
		case t == "" || t[0] == '#':
		case t[0] == '[':
			if cur < 0 {
				return nil, errorf(name, lineNo, "port line before any node: expected a \"Switch\", \"Ca\" or \"Rt\" line first")
			}
			if err := c.addPort(cur, t, lineNo); err != nil {
				return nil, err
			}
		case ibHeaderKind(t) >= 0:
			n, err := c.addNode(t, lineNo)
			if err != nil {
				return nil, err
			}
			cur = n
		case ibIsKeyValue(t), strings.HasPrefix(t, "Chassis"), strings.HasPrefix(t, "Non-Chassis"),
			strings.HasPrefix(t, "Hostname:"):
			// vendid=, devid=, sysimgguid=, switchguid=, caguid=, and the
			// chassis lines of ibnetdiscover -g: nothing the tree needs.
		default:
			hint := ""
			if strings.HasPrefix(t, "SW ") || strings.HasPrefix(t, "CA ") {
				hint = " (the ports report of ibnetdiscover -p is not supported: run ibnetdiscover without -p)"
			}
			return nil, errorf(name, lineNo, "expected a node line (Switch, Ca, Rt), a port line ([PORT] ...), key=value or a # comment, got %q%s",
				ibClip(t), hint)
		}
	}
	if len(c.nodes) == 0 {
		return nil, errorf(name, 0, "no nodes: expected \"Switch\" and \"Ca\" blocks of ibnetdiscover output")
	}
	return c, nil
}

func ibHeaderKind(t string) int {
	for k, w := range []string{"Switch", "Ca", "Rt"} {
		if len(t) > len(w) && strings.HasPrefix(t, w) && (t[len(w)] == ' ' || t[len(w)] == '\t') {
			return k
		}
	}
	return -1
}

func ibIsKeyValue(t string) bool {
	i := strings.IndexByte(t, '=')
	if i <= 0 {
		return false
	}
	for _, r := range t[:i] {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// addNode parses `Switch 65 "S-guid" # "desc" enhanced port 0 lid 73 lmc 0`
// (or Ca, Rt).
func (c *ibCapture) addNode(t string, line int) (int32, error) {
	kind := ibKind(ibHeaderKind(t))
	word := [...]string{"Switch", "Ca", "Rt"}[kind]
	want := fmt.Sprintf("expected %s NPORTS \"ID\" # \"DESCRIPTION\"", word)
	rest := strings.TrimLeft(t[len(word):], " \t")
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	nports, err := strconv.Atoi(rest[:i])
	if err != nil || nports < 1 || nports > ibMaxPorts {
		return 0, errorf(c.name, line, "%s: port count %q is not a number from 1 to %d", want, ibClip(rest[:i]), ibMaxPorts)
	}
	id, rest, ok := ibQuoted(strings.TrimLeft(rest[i:], " \t"))
	if !ok || id == "" {
		return 0, errorf(c.name, line, "%s: no quoted node ID", want)
	}
	desc := ""
	if h := strings.IndexByte(rest, '#'); h >= 0 {
		desc = ibDescription(rest[h+1:])
	}
	if prev, dup := c.byID[id]; dup {
		return 0, errorf(c.name, line, "node %q appears twice (first at line %d): duplicate GUID", id, c.nodes[prev].line)
	}
	n := int32(len(c.nodes))
	c.byID[id] = n
	c.nodes = append(c.nodes, ibNode{id: id, kind: kind, nports: nports, desc: desc, line: line,
		sharp: kind == ibCA && ibIsSHARP(desc)})
	return n, nil
}

// addPort parses a switch port `[1] "H-guid"[1](guid) # "desc" lid 647 4xNDR`
// or a CA port `[1](guid) "S-guid"[17] # lid 657 lmc 0 "desc" lid 73 4xNDR`,
// either with [ext N] after a port number.
func (c *ibCapture) addPort(n int32, t string, line int) error {
	const want = `expected [PORT] "PEER-ID"[PEER-PORT]`
	nd := &c.nodes[n]
	num, rest, ok := ibPortNum(t)
	if !ok {
		return errorf(c.name, line, "%s: %q does not start with a port number", want, ibClip(t))
	}
	if num < 1 || num > nd.nports {
		return errorf(c.name, line, "port %d of %s %q: it has ports 1 to %d", num, nd.kind, nd.id, nd.nports)
	}
	for _, prev := range nd.ports { // at most 255, numbers being unique
		if prev.num == num {
			return errorf(c.name, line, "port %d of %q listed twice (first at line %d)", num, nd.id, prev.line)
		}
	}
	rest = ibSkipGUID(strings.TrimLeft(rest, " \t"))
	peer, rest, ok := ibQuoted(strings.TrimLeft(rest, " \t"))
	if !ok || peer == "" {
		return errorf(c.name, line, "%s: no quoted peer ID", want)
	}
	pnum, rest, ok := ibPortNum(rest)
	if !ok || pnum < 1 || pnum > ibMaxPorts {
		return errorf(c.name, line, "%s: no peer port number from 1 to %d after %q", want, ibMaxPorts, peer)
	}
	p := ibPort{num: num, peerID: peer, peer: -1, peerPort: pnum, line: line}
	if h := strings.IndexByte(rest, '#'); h >= 0 {
		p.gbps = ibCommentGbps(rest[h+1:])
	}
	nd.ports = append(nd.ports, p)
	return nil
}

// ibPortNum reads "[N]" and an optional "[ext M]".
func ibPortNum(s string) (int, string, bool) {
	if len(s) < 3 || s[0] != '[' {
		return 0, s, false
	}
	end := strings.IndexByte(s, ']')
	if end < 2 || end > 4 {
		return 0, s, false
	}
	v, err := strconv.Atoi(s[1:end])
	if err != nil || v < 0 {
		return 0, s, false
	}
	s = s[end+1:]
	if strings.HasPrefix(s, "[ext ") {
		if e := strings.IndexByte(s, ']'); e > 0 {
			s = s[e+1:]
		}
	}
	return v, s, true
}

// ibSkipGUID drops a "(guid)" printed after a CA's port number.
func ibSkipGUID(s string) string {
	if strings.HasPrefix(s, "(") {
		if e := strings.IndexByte(s, ')'); e > 0 {
			return s[e+1:]
		}
	}
	return s
}

// ibQuoted reads `"text"` at the start of s.
func ibQuoted(s string) (string, string, bool) {
	if len(s) < 2 || s[0] != '"' {
		return "", s, false
	}
	end := strings.IndexByte(s[1:], '"')
	if end < 0 {
		return "", s, false
	}
	return s[1 : end+1], s[end+2:], true
}

// ibDescription takes the node description out of a header comment:
// between the first and the last double quote, since a description may
// itself hold quotes.
func ibDescription(comment string) string {
	a := strings.IndexByte(comment, '"')
	b := strings.LastIndexByte(comment, '"')
	if a < 0 || b <= a {
		return ""
	}
	return comment[a+1 : b]
}

// ibLaneGbps is the data rate of one lane at each InfiniBand speed, as the
// link rates are marketed (4xNDR = 400 Gb/s).
var ibLaneGbps = map[string]float64{
	"SDR": 2.5, "DDR": 5, "QDR": 10, "FDR10": 10, "FDR": 14, "EDR": 25, "HDR": 50, "NDR": 100, "XDR": 200,
}

// ibCommentGbps finds the "4xNDR" token after the peer's description.
func ibCommentGbps(comment string) float64 {
	if q := strings.LastIndexByte(comment, '"'); q >= 0 {
		comment = comment[q+1:]
	}
	for _, tok := range strings.Fields(comment) {
		if g := ibLinkGbps(tok); g > 0 {
			return g
		}
	}
	return 0
}

// ibLinkGbps reads "4xNDR" (width x speed); 0 when it is not one.
func ibLinkGbps(tok string) float64 {
	w, sp, ok := strings.Cut(tok, "x")
	if !ok {
		return 0
	}
	width, err := strconv.Atoi(w)
	if err != nil || width < 1 || width > 12 {
		return 0
	}
	return float64(width) * ibLaneGbps[sp]
}

// link resolves every port's peer and checks that both ends of each link
// name each other.
func (c *ibCapture) link() error {
	for i := range c.nodes {
		nd := &c.nodes[i]
		top := 0
		for _, p := range nd.ports {
			top = max(top, p.num)
		}
		nd.byPort = make([]int32, top+1)
		for j := range nd.byPort {
			nd.byPort[j] = -1
		}
		for j, p := range nd.ports {
			nd.byPort[p.num] = int32(j)
		}
	}
	for i := range c.nodes {
		nd := &c.nodes[i]
		for j := range nd.ports {
			p := &nd.ports[j]
			peer, ok := c.byID[p.peerID]
			if !ok {
				return errorf(c.name, p.line, "port %d of %q links to %q, but the file has no node %q: expected a block for it (truncated capture?)",
					p.num, nd.id, p.peerID, p.peerID)
			}
			pn := &c.nodes[peer]
			if p.peerPort > pn.nports {
				return errorf(c.name, p.line, "port %d of %q links to port %d of %q, which has ports 1 to %d",
					p.num, nd.id, p.peerPort, pn.id, pn.nports)
			}
			back := int32(-1)
			if p.peerPort < len(pn.byPort) {
				back = pn.byPort[p.peerPort]
			}
			if back < 0 {
				return errorf(c.name, p.line, "port %d of %q links to port %d of %q, but that port is not listed in its block (line %d): expected both ends of each link (truncated capture?)",
					p.num, nd.id, p.peerPort, pn.id, pn.line)
			}
			if bp := pn.ports[back]; bp.peerID != nd.id || bp.peerPort != p.num {
				return errorf(c.name, p.line, "port %d of %q links to port %d of %q, but line %d says that port links to port %d of %q: the two ends disagree",
					p.num, nd.id, p.peerPort, pn.id, bp.line, bp.peerPort, bp.peerID)
			}
			if int32(i) == peer && p.num == p.peerPort {
				return errorf(c.name, p.line, "port %d of %q links to itself", p.num, nd.id)
			}
			p.peer = peer
		}
	}
	return nil
}

// Reasons a CA is not a compute host, in the order the warning lists them.
const (
	ibAsideSHARP = iota
	ibAsideDefault
	ibAsideOddDesc
	ibAsideManagement
	ibAsidePlaceholder
	ibAsideShared
	ibAsideUnlinked
	ibAsideCount
)

var ibAsideLabels = [ibAsideCount]string{
	"SHARP aggregation nodes",
	"with the firmware's default description (no host name)",
	"with a description that is not \"HOST HCA\"",
	"of management hosts",
	"of hosts with placeholder names",
	"of hosts whose name two machines share (an HCA name twice)",
	"not linked to a switch",
}

type ibAside struct {
	n     [ibAsideCount]int
	names [ibAsideCount][]string
	seen  map[string]bool // reason/host pairs already named
}

func (a *ibAside) add(reason int, host string) {
	a.n[reason]++
	if host == "" {
		return
	}
	if a.seen == nil {
		a.seen = map[string]bool{}
	}
	if k := strconv.Itoa(reason) + "/" + host; !a.seen[k] {
		a.seen[k] = true
		a.names[reason] = append(a.names[reason], host)
	}
}

func (a *ibAside) String() string {
	total := 0
	var parts []string
	for r := range ibAsideCount {
		if a.n[r] == 0 {
			continue
		}
		total += a.n[r]
		p := fmt.Sprintf("%d %s", a.n[r], ibAsideLabels[r])
		if names := a.names[r]; len(names) > 0 {
			slices.SortFunc(names, ibNaturalCompare)
			p += " (" + ibList(names, 4) + ")"
		}
		parts = append(parts, p)
	}
	if total == 0 {
		return ""
	}
	return fmt.Sprintf("set aside %s that %s not compute hosts: %s", ibCount(total, "CA", "CAs"),
		map[bool]string{true: "is", false: "are"}[total == 1], strings.Join(parts, ", "))
}

// ibHCA is one HCA port of a compute host, on a leaf switch.
type ibHCA struct {
	name string // mlx5_5; "mlx5_0:2" for the second port of a multi-port CA
	ca   int32
	sw   int32
	gbps float64
	line int // the CA's line
}

type ibHost struct {
	name string
	hcas []ibHCA
}

// ibHostName splits "a08-p1-dgx-04-c01 mlx5_5" into host and HCA, or says
// why the CA is not a compute host.
func ibHostName(desc string, mgmt *regexp.Regexp) (host, hca string, reason int) {
	low := strings.ToLower(desc)
	switch {
	case ibIsSHARP(desc):
		return "", "", ibAsideSHARP
	case strings.Contains(low, "mellanox technologies") || strings.Contains(low, "nvidia technologies") ||
		ibFirmwareDesc.MatchString(desc) || strings.TrimSpace(desc) == "":
		return "", "", ibAsideDefault
	}
	f := strings.Fields(desc)
	if len(f) != 2 || !ibHostRe.MatchString(f[0]) || !ibHCARe.MatchString(f[1]) {
		return "", "", ibAsideOddDesc
	}
	host, hca = f[0], f[1]
	switch {
	case ibPlaceholderHosts[strings.ToLower(host)]:
		return host, hca, ibAsidePlaceholder
	case mgmt.MatchString(host):
		return host, hca, ibAsideManagement
	}
	return host, hca, -1
}

// ibIsSHARP tells the description of a SHARP aggregation node.
func ibIsSHARP(desc string) bool {
	return strings.Contains(strings.ToLower(desc), "aggregation node")
}

var (
	// Host names must survive a hostlist round trip: no brackets, commas
	// or spaces.
	ibHostRe       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)
	ibHCARe        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$`)
	ibFirmwareDesc = regexp.MustCompile(`^MT\d{4,5}\b`)
)

// ibSwitchName turns "MF0;A09-P1-IBLEAF-04-04:MQM9701/U1" into
// "A09-P1-IBLEAF-04-04"; other descriptions stay as they are, and a switch
// without one is named by its ID.
func ibSwitchName(nd *ibNode) string {
	d := strings.TrimSpace(ibPrintable(nd.desc))
	if _, after, ok := strings.Cut(d, ";"); ok {
		if name, _, ok := strings.Cut(after, ":"); ok && name != "" {
			return name
		}
	}
	if d == "" {
		return nd.id
	}
	return d
}

// ibDomain is a domain of the switch tree before it goes into the Builder.
type ibDomain struct {
	tier     int
	switches []int32 // node indexes
	children []int   // indexes into the domains slice
	hosts    []int   // leaf domains: indexes into hosts
	level    Level
	name     string
	parent   int
	uplink   float64
}

type ibBuild struct {
	c        *ibCapture
	opts     IBNetDiscoverOptions
	aside    ibAside
	hosts    []ibHost
	hostOf   map[string]int
	isLeaf   []bool
	tier     []int // per node; -1 for CAs, set-aside or unreached switches
	names    []string
	domOf    []int // per switch node: the domain of its tier
	domains  []ibDomain
	warnings []string
	classSeq map[string]int // class name stem -> suffixes used
}

func (c *ibCapture) build(opts IBNetDiscoverOptions) (*Fabric, error) {
	if opts.ManagementHosts == nil {
		opts.ManagementHosts = DefaultManagementHosts
	}
	b := &ibBuild{c: c, opts: opts, hostOf: map[string]int{}, classSeq: map[string]int{}}
	if err := b.noSwitches(); err != nil {
		return nil, err
	}
	b.collectHosts()
	if len(b.hosts) == 0 {
		msg := "no compute hosts: expected CAs described \"HOST HCA\" (as rdma-ndd sets them) on switch ports"
		if s := b.aside.String(); s != "" {
			msg += "; " + s
		}
		return nil, errorf(c.name, 0, "%s", msg)
	}
	b.markLeaves()
	b.tiers()
	if err := b.leafDomains(); err != nil {
		return nil, err
	}
	if err := b.upperDomains(); err != nil {
		return nil, err
	}
	b.crossedCables()
	return b.assemble()
}

// noSwitches reports a capture that never reached a switch, such as one
// taken from a host whose port was down.
func (b *ibBuild) noSwitches() error {
	for i := range b.c.nodes {
		if b.c.nodes[i].kind == ibSwitch {
			return nil
		}
	}
	nd := &b.c.nodes[0]
	links := "no links"
	if len(nd.ports) > 0 {
		links = ibCount(len(nd.ports), "link", "links")
	}
	return errorf(b.c.name, nd.line, "%s %q (%q) has %s and the file has no switch: expected the capture of a fabric, with Switch blocks listing the hosts' HCAs (was the port down when ibnetdiscover ran?)",
		nd.kind, nd.id, nd.desc, links)
}

// collectHosts sorts the CAs into compute hosts and the rest.
func (b *ibBuild) collectHosts() {
	c := b.c
	type claim struct {
		host, hca string
		ca, sw    int32
		gbps      float64
	}
	var claims []claim
	routers := 0
	for i := range c.nodes {
		nd := &c.nodes[i]
		if nd.kind == ibRouter {
			routers++
		}
		if nd.kind != ibCA {
			continue
		}
		host, hca, reason := ibHostName(nd.desc, b.opts.ManagementHosts)
		if reason >= 0 {
			b.aside.add(reason, host)
			continue
		}
		var onSwitch []ibPort
		for _, p := range nd.ports {
			if c.nodes[p.peer].kind == ibSwitch {
				onSwitch = append(onSwitch, p)
			}
		}
		if len(onSwitch) == 0 {
			b.aside.add(ibAsideUnlinked, host)
			continue
		}
		for _, p := range onSwitch {
			name := hca
			if len(onSwitch) > 1 {
				name = fmt.Sprintf("%s:%d", hca, p.num)
			}
			claims = append(claims, claim{host, name, int32(i), p.peer, p.gbps})
		}
	}
	// A host name with the same HCA twice belongs to two machines.
	shared := map[string]bool{}
	seen := map[[2]string]bool{}
	for _, cl := range claims {
		k := [2]string{cl.host, cl.hca}
		if seen[k] {
			shared[cl.host] = true
		}
		seen[k] = true
	}
	counted := map[int32]bool{}
	for _, cl := range claims {
		if shared[cl.host] {
			if !counted[cl.ca] {
				counted[cl.ca] = true
				b.aside.add(ibAsideShared, cl.host)
			}
			continue
		}
		h, ok := b.hostOf[cl.host]
		if !ok {
			h = len(b.hosts)
			b.hostOf[cl.host] = h
			b.hosts = append(b.hosts, ibHost{name: cl.host})
		}
		b.hosts[h].hcas = append(b.hosts[h].hcas, ibHCA{name: cl.hca, ca: cl.ca, sw: cl.sw, gbps: cl.gbps, line: c.nodes[cl.ca].line})
	}
	for i := range b.hosts {
		slices.SortFunc(b.hosts[i].hcas, func(x, y ibHCA) int { return ibNaturalCompare(x.name, y.name) })
	}
	if s := b.aside.String(); s != "" {
		b.warnings = append(b.warnings, s)
	}
	if routers > 0 {
		b.warnings = append(b.warnings, fmt.Sprintf("ignored %s (links to other subnets are not part of this tree)", ibCount(routers, "router", "routers")))
	}
}

// markLeaves flags the switches with compute hosts, and names all switches.
func (b *ibBuild) markLeaves() {
	c := b.c
	b.isLeaf = make([]bool, len(c.nodes))
	for _, h := range b.hosts {
		for _, x := range h.hcas {
			b.isLeaf[x.sw] = true
		}
	}
	b.names = make([]string, len(c.nodes))
	count := map[string]int{}
	for i := range c.nodes {
		if c.nodes[i].kind == ibSwitch {
			b.names[i] = ibSwitchName(&c.nodes[i])
			count[b.names[i]]++
		}
	}
	// Switches left with a factory description share it: name them by ID.
	for i := range c.nodes {
		if c.nodes[i].kind == ibSwitch && count[b.names[i]] > 1 {
			b.names[i] = b.names[i] + " " + c.nodes[i].id
		}
	}
}

// tiers numbers switches by hops from the nearest leaf switch. Switches
// with hosts the loader set aside but no compute host (a leaf whose hosts
// are unnamed) are left out, or they would pass for spines or cores.
func (b *ibBuild) tiers() {
	c := b.c
	b.tier = make([]int, len(c.nodes))
	var queue []int32
	var edgeOnly []string
	for i := range c.nodes {
		b.tier[i] = -1
		nd := &c.nodes[i]
		if nd.kind != ibSwitch {
			continue
		}
		if b.isLeaf[i] {
			b.tier[i] = 0
			queue = append(queue, int32(i))
			continue
		}
		for _, p := range nd.ports {
			if pn := &c.nodes[p.peer]; pn.kind == ibCA && !pn.sharp {
				b.tier[i] = -2 // an edge switch without compute hosts
			}
		}
		if b.tier[i] == -2 {
			edgeOnly = append(edgeOnly, b.names[i])
		}
	}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, p := range c.nodes[n].ports {
			if c.nodes[p.peer].kind == ibSwitch && b.tier[p.peer] == -1 {
				b.tier[p.peer] = b.tier[n] + 1
				queue = append(queue, p.peer)
			}
		}
	}
	var unreached []string
	sameTier := 0
	for i := range c.nodes {
		if c.nodes[i].kind != ibSwitch {
			continue
		}
		switch b.tier[i] {
		case -1:
			unreached = append(unreached, b.names[i])
		case -2:
			b.tier[i] = -1
		default:
			for _, p := range c.nodes[i].ports {
				if b.tier[p.peer] == b.tier[i] && c.nodes[p.peer].kind == ibSwitch && int32(i) < p.peer {
					sameTier++
				}
			}
		}
	}
	if len(edgeOnly) > 0 {
		slices.SortFunc(edgeOnly, ibNaturalCompare)
		b.warnings = append(b.warnings, fmt.Sprintf("set aside %s whose CAs are all set aside (no compute host makes them leaves): %s",
			ibCount(len(edgeOnly), "switch", "switches"), ibList(edgeOnly, 4)))
	}
	if len(unreached) > 0 {
		slices.SortFunc(unreached, ibNaturalCompare)
		b.warnings = append(b.warnings, fmt.Sprintf("set aside %s with no path to a compute host: %s", ibCount(len(unreached), "switch", "switches"), ibList(unreached, 4)))
	}
	if sameTier > 0 {
		b.warnings = append(b.warnings, fmt.Sprintf("ignored %s between switches of the same tier (not a fat tree there)", ibCount(sameTier, "link", "links")))
	}
}

// leafDomains groups leaf switches that share hosts.
func (b *ibBuild) leafDomains() error {
	c := b.c
	uf := newIBUnionFind(len(c.nodes))
	for _, h := range b.hosts {
		for _, x := range h.hcas[1:] {
			uf.union(h.hcas[0].sw, x.sw)
		}
	}
	group := map[int32]int{} // union-find root -> domain
	b.domOf = make([]int, len(c.nodes))
	for i := range b.domOf {
		b.domOf[i] = -1
	}
	var order []int32
	for i := range c.nodes {
		if b.isLeaf[i] {
			order = append(order, int32(i))
		}
	}
	b.sortSwitches(order)
	for _, s := range order {
		r := uf.find(s)
		d, ok := group[r]
		if !ok {
			d = len(b.domains)
			group[r] = d
			b.domains = append(b.domains, ibDomain{tier: 0, level: LevelLeaf, parent: -1})
		}
		b.domains[d].switches = append(b.domains[d].switches, s)
		b.domOf[s] = d
	}
	for h := range b.hosts {
		d := b.domOf[b.hosts[h].hcas[0].sw]
		b.domains[d].hosts = append(b.domains[d].hosts, h)
	}
	for d := range b.domains {
		dom := &b.domains[d]
		widest := 0
		for _, h := range dom.hosts {
			widest = max(widest, len(b.hosts[h].hcas))
		}
		if len(dom.switches) > widest {
			return b.splitHostError(dom, widest)
		}
		slices.SortFunc(dom.hosts, func(x, y int) int { return ibNaturalCompare(b.hosts[x].name, b.hosts[y].name) })
	}
	b.missingRails()
	return nil
}

// splitHostError explains a leaf group larger than any host's HCAs: a host
// cabled into two groups joined them. It names that host when one host's
// removal splits the group.
func (b *ibBuild) splitHostError(dom *ibDomain, widest int) error {
	c := b.c
	for _, cand := range dom.hosts {
		uf := newIBUnionFind(len(c.nodes))
		for _, h := range dom.hosts {
			if h == cand {
				continue
			}
			for _, x := range b.hosts[h].hcas[1:] {
				uf.union(b.hosts[h].hcas[0].sw, x.sw)
			}
		}
		host := &b.hosts[cand]
		var parts []string
		roots := map[int32]bool{}
		for _, x := range host.hcas {
			roots[uf.find(x.sw)] = true
			parts = append(parts, fmt.Sprintf("%s on %s", x.name, b.names[x.sw]))
		}
		if len(roots) > 1 {
			return errorf(c.name, host.hcas[0].line, "host %q has HCAs on leaves of %d different groups (%s): expected all HCAs of a host on the leaf switches of one group, one per rail",
				host.name, len(roots), strings.Join(parts, ", "))
		}
	}
	names := make([]string, len(dom.switches))
	for i, s := range dom.switches {
		names[i] = b.names[s]
	}
	return errorf(c.name, c.nodes[dom.switches[0]].line, "hosts join %d leaf switches (%s) into one group, but no host has more than %d HCAs: expected one leaf switch per rail",
		len(names), ibList(names, 6), widest)
}

// missingRails warns about hosts that reach fewer of their group's leaf
// switches than the group has: a link down, or a missing cable.
func (b *ibBuild) missingRails() {
	var short []string
	n := 0
	for _, dom := range b.domains {
		for _, h := range dom.hosts {
			host := &b.hosts[h]
			on := map[int32]bool{}
			for _, x := range host.hcas {
				on[x.sw] = true
			}
			if len(on) == len(dom.switches) {
				continue
			}
			if n++; n > 4 {
				continue // ibList shows four
			}
			var miss []string
			for _, s := range dom.switches {
				if !on[s] {
					miss = append(miss, b.names[s])
				}
			}
			short = append(short, fmt.Sprintf("%s (no link to %s)", host.name, ibList(miss, 4)))
		}
	}
	if n > 0 {
		short = append(short, make([]string, n-len(short))...)
		b.warnings = append(b.warnings, fmt.Sprintf("%s fewer leaf switches than their group has, so fewer rails: %s",
			ibCount(n, "host reaches", "hosts reach"), ibList(short, 4)))
	}
}

// crossedCables warns about a host whose HCA sits on the leaf switch that
// serves another HCA name for the rest of its group: swapped cables, which
// make rail-matched traffic cross the spines.
func (b *ibBuild) crossedCables() {
	var crossed []string
	for _, dom := range b.domains[:b.leafCount()] {
		// The HCA name most hosts have on each leaf switch.
		votesOn := map[int32]map[string]int{}
		for _, h := range dom.hosts {
			for _, x := range b.hosts[h].hcas {
				if votesOn[x.sw] == nil {
					votesOn[x.sw] = map[string]int{}
				}
				votesOn[x.sw][x.name]++
			}
		}
		major := map[int32]string{}
		for _, s := range dom.switches {
			votes := votesOn[s]
			best, bestN, tie := "", 0, false
			for name, n := range votes {
				switch {
				case n > bestN:
					best, bestN, tie = name, n, false
				case n == bestN:
					tie = true
				}
			}
			if !tie && bestN >= 2 {
				major[s] = best
			}
		}
		railOf := map[string]int32{}
		for s, name := range major {
			railOf[name] = s
		}
		for _, h := range dom.hosts {
			var wrong []string
			for _, x := range b.hosts[h].hcas {
				if m, ok := major[x.sw]; ok && m != x.name {
					if want, ok := railOf[x.name]; ok && want != x.sw {
						wrong = append(wrong, fmt.Sprintf("%s on %s, the leaf of %s", x.name, b.names[x.sw], m))
					}
				}
			}
			if len(wrong) > 0 {
				crossed = append(crossed, fmt.Sprintf("%s (%s)", b.hosts[h].name, strings.Join(wrong[:min(len(wrong), 4)], "; ")))
			}
		}
	}
	if len(crossed) > 0 {
		b.warnings = append(b.warnings, fmt.Sprintf("%s on the leaf switch of another rail (crossed cables?): %s",
			ibCount(len(crossed), "host has HCAs", "hosts have HCAs"), ibList(crossed, 4)))
	}
}

func (b *ibBuild) leafCount() int {
	n := 0
	for n < len(b.domains) && b.domains[n].tier == 0 {
		n++
	}
	return n
}

// upperDomains groups the switches of each tier above the leaves by the
// child domains they connect, bottom-up, then roots and names the tree.
func (b *ibBuild) upperDomains() error {
	c := b.c
	maxTier := 0
	for i := range c.nodes {
		maxTier = max(maxTier, b.tier[i])
	}
	if maxTier > 3 {
		// Tier 3 can only be the cluster, and here something is above it.
		for i := range c.nodes {
			if b.tier[i] == 3 {
				return errorf(c.name, c.nodes[i].line, "switch %q is 3 tiers above the leaves and has switches above it: the model holds at most four tiers (leaf, block, pod, cluster)",
					b.names[i])
			}
		}
	}
	cur := make([]int, b.leafCount()) // domains of the tier below
	for i := range cur {
		cur[i] = i
	}
	var tops []int // domains with nothing above them
	for t := 1; t <= maxTier; t++ {
		var orphans []int
		cur, orphans = b.groupTier(t, cur)
		tops = append(tops, orphans...)
	}
	tops = append(tops, cur...)
	b.uplinks()
	b.root(tops)
	if err := b.levels(); err != nil {
		return err
	}
	b.nameDomains()
	return nil
}

// groupTier makes the domains of tier t: its switches joined by the child
// domains (of tier t-1, listed in below) they share. It returns the new
// domains, and the children with no switch above them.
func (b *ibBuild) groupTier(t int, below []int) (next, orphans []int) {
	c := b.c
	uf := newIBUnionFind(len(b.domains))
	var sws []int32
	above := map[int]bool{}
	child := map[int32]int{} // switch -> one child domain
	for i := range c.nodes {
		if b.tier[i] != t {
			continue
		}
		sws = append(sws, int32(i))
		first := -1
		for _, p := range c.nodes[i].ports {
			if b.tier[p.peer] != t-1 || c.nodes[p.peer].kind != ibSwitch {
				continue
			}
			d := b.domOf[p.peer]
			above[d] = true
			if first < 0 {
				first = d
				child[int32(i)] = d
			} else {
				uf.union(int32(first), int32(d))
			}
		}
	}
	b.sortSwitches(sws)
	group := map[int32]int{} // union-find root -> new domain
	for _, s := range sws {
		r := uf.find(int32(child[s]))
		d, ok := group[r]
		if !ok {
			d = len(b.domains)
			group[r] = d
			b.domains = append(b.domains, ibDomain{tier: t, parent: -1})
			next = append(next, d)
		}
		b.domains[d].switches = append(b.domains[d].switches, s)
		b.domOf[s] = d
	}
	for _, d := range below {
		if !above[d] {
			orphans = append(orphans, d)
			continue
		}
		p := group[uf.find(int32(d))]
		b.domains[d].parent = p
		b.domains[p].children = append(b.domains[p].children, d)
	}
	return next, orphans
}

// uplinks sums each domain's links one tier up; one link of unknown speed
// leaves the sum unknown (0).
func (b *ibBuild) uplinks() {
	c := b.c
	for d := range b.domains {
		dom := &b.domains[d]
		if dom.parent < 0 {
			continue
		}
		sum, known := 0.0, true
		for _, s := range dom.switches {
			for _, p := range c.nodes[s].ports {
				if b.tier[p.peer] == dom.tier+1 && c.nodes[p.peer].kind == ibSwitch {
					sum += p.gbps
					known = known && p.gbps > 0
				}
			}
		}
		if known {
			dom.uplink = sum
		}
	}
}

// root makes the single top domain the cluster when it has switches, else
// puts the parts under a cluster without switches.
func (b *ibBuild) root(tops []int) {
	if len(tops) == 1 && b.domains[tops[0]].tier > 0 {
		b.domains[tops[0]].level = LevelCluster
		b.domains[tops[0]].name = "cluster"
		return
	}
	root := len(b.domains)
	b.domains = append(b.domains, ibDomain{tier: -1, level: LevelCluster, name: "cluster", parent: -1, children: tops})
	for _, d := range tops {
		b.domains[d].parent = root
	}
	if len(tops) > 1 {
		names := make([]string, 0, len(tops))
		for _, d := range tops {
			names = append(names, b.names[b.domains[d].switches[0]])
		}
		b.warnings = append(b.warnings, fmt.Sprintf("the fabric is in %d parts with no switch above them (parts holding %s): they cannot reach each other",
			len(tops), ibList(names, 4)))
	}
}

// levels names the tiers between leaf and cluster: blocks, then pods.
func (b *ibBuild) levels() error {
	for d := range b.domains {
		dom := &b.domains[d]
		if dom.level == LevelCluster || dom.tier == 0 {
			continue
		}
		switch dom.tier {
		case 1:
			dom.level = LevelBlock
		case 2:
			dom.level = LevelPod
		default:
			s := dom.switches[0]
			return errorf(b.c.name, b.c.nodes[s].line, "switch %q is %d tiers above the leaves: the model holds at most four tiers (leaf, block, pod, cluster)",
				b.names[s], dom.tier)
		}
	}
	return nil
}

// nameDomains numbers the domains of each level in switch-name order:
// leaf-01, block-01.
func (b *ibBuild) nameDomains() {
	count := map[Level]int{}
	total := map[Level]int{}
	for _, dom := range b.domains {
		total[dom.level]++
	}
	for d := range b.domains {
		dom := &b.domains[d]
		if dom.name == "" {
			count[dom.level]++
			dom.name = fmt.Sprintf("%s-%0*d", dom.level, max(2, len(strconv.Itoa(total[dom.level]))), count[dom.level])
		}
	}
}

// sortSwitches orders switches by name, naturally.
func (b *ibBuild) sortSwitches(s []int32) {
	slices.SortFunc(s, func(x, y int32) int { return ibNaturalCompare(b.names[x], b.names[y]) })
}

// assemble hands the domains and hosts to a Builder.
func (b *ibBuild) assemble() (*Fabric, error) {
	c := b.c
	bld := NewBuilder(strings.TrimSuffix(filepath.Base(c.name), filepath.Ext(c.name)))
	for _, w := range b.warnings {
		bld.Warn("%s", w)
	}
	ids := make([]DomainID, len(b.domains))
	var add func(d int, parent DomainID) error
	add = func(d int, parent DomainID) error {
		dom := &b.domains[d]
		names := make([]string, len(dom.switches))
		radix := -1
		for i, s := range dom.switches {
			names[i] = b.names[s]
			r := b.radix(s)
			if radix == -1 {
				radix = r
			} else if radix != r {
				radix = 0
			}
		}
		slices.SortFunc(names, ibNaturalCompare)
		id, err := bld.AddDomain(Domain{Name: dom.name, Level: dom.level, Parent: parent, Switches: len(names),
			SwitchNames: names, SwitchPorts: max(radix, 0), UplinkGbps: dom.uplink})
		if err != nil {
			return errorf(c.name, 0, "%v", err)
		}
		ids[d] = id
		for _, ch := range dom.children {
			if err := add(ch, id); err != nil {
				return err
			}
		}
		return nil
	}
	for d := range b.domains {
		if b.domains[d].parent < 0 {
			if err := add(d, NoDomain); err != nil {
				return nil, err
			}
		}
	}
	classes := map[string]int32{}
	for d := range b.domains[:b.leafCount()] {
		for _, h := range b.domains[d].hosts {
			host := &b.hosts[h]
			cls := b.class(bld, host, classes)
			if _, err := bld.AddNode(host.name, cls, ids[d]); err != nil {
				return nil, errorf(c.name, host.hcas[0].line, "%v", err)
			}
		}
	}
	f, err := bld.Build()
	if err != nil {
		return nil, errorf(c.name, 0, "%v", err)
	}
	return f, nil
}

// radix is a switch's port count, less the internal port of its SHARP
// aggregation node.
func (b *ibBuild) radix(s int32) int {
	nd := &b.c.nodes[s]
	r := nd.nports
	for _, p := range nd.ports {
		if b.c.nodes[p.peer].sharp {
			r--
		}
	}
	return r
}

// class finds or adds the node class of a host: the caller's hardware with
// the host's rails.
func (b *ibBuild) class(bld *Builder, host *ibHost, classes map[string]int32) int32 {
	hcas := make([]string, len(host.hcas))
	gbps := math.Inf(1)
	for i, x := range host.hcas {
		hcas[i] = x.name
		gbps = min(gbps, x.gbps)
	}
	key := fmt.Sprintf("%g|%s", gbps, strings.Join(hcas, ","))
	if id, ok := classes[key]; ok {
		return id
	}
	base := b.opts.Class
	if base.GPUs == 0 {
		base = DefaultIBClass
	}
	if base.Name == "" {
		base.Name = DefaultIBClass.Name
	}
	cls := base
	cls.Rails = len(hcas)
	cls.RailGbps = gbps
	cls.HCAs = hcas
	speed := ""
	if gbps > 0 {
		speed = strconv.FormatFloat(gbps, 'f', -1, 64) + "g"
	}
	stem := fmt.Sprintf("%s-%dx%s", base.Name, len(hcas), speed)
	cls.Name = stem
	for {
		if _, taken := bld.ClassIndex(cls.Name); !taken {
			break
		}
		b.classSeq[stem]++
		cls.Name = fmt.Sprintf("%s-%d", stem, b.classSeq[stem]+1)
	}
	if len(cls.GPURail) > 0 && slices.Max(cls.GPURail) >= cls.Rails {
		cls.GPURail = nil
		bld.Warn("node class %s: the given gpuRail needs more rails than the %d HCAs found; GPU g uses rail g mod %d", cls.Name, cls.Rails, cls.Rails)
	}
	id := bld.AddClass(cls)
	classes[key] = id
	return id
}

// ibUnionFind joins indexes into groups.
type ibUnionFind []int32

func newIBUnionFind(n int) ibUnionFind {
	u := make(ibUnionFind, n)
	for i := range u {
		u[i] = int32(i)
	}
	return u
}

func (u ibUnionFind) find(x int32) int32 {
	for u[x] != x {
		u[x] = u[u[x]]
		x = u[x]
	}
	return x
}

func (u ibUnionFind) union(a, b int32) {
	ra, rb := u.find(a), u.find(b)
	if ra != rb {
		// The smaller index stays root, so groups are stable.
		if ra < rb {
			u[rb] = ra
		} else {
			u[ra] = rb
		}
	}
}

// ibNaturalCompare orders "mlx5_2" before "mlx5_10" and "c9" before "c10".
func ibNaturalCompare(a, b string) int {
	for a != "" && b != "" {
		if ibIsDigit(a[0]) && ibIsDigit(b[0]) {
			i, j := 0, 0
			for i < len(a) && ibIsDigit(a[i]) {
				i++
			}
			for j < len(b) && ibIsDigit(b[j]) {
				j++
			}
			na, nb := strings.TrimLeft(a[:i], "0"), strings.TrimLeft(b[:j], "0")
			if len(na) != len(nb) {
				return len(na) - len(nb)
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			if i != j {
				return i - j
			}
			a, b = a[i:], b[j:]
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func ibIsDigit(c byte) bool { return c >= '0' && c <= '9' }

// ibList joins up to n items and says how many more there are.
func ibList(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:n], ", "), len(items)-n)
}

// ibPrintable keeps a description printable (it becomes a switch name in
// YAML): invalid UTF-8 and control characters turn into '?'.
func ibPrintable(s string) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}

// ibCount writes "1 host has" or "3 hosts have".
func ibCount(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// ibClip shortens a line for an error message.
func ibClip(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}
