package topology

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// APIVersion and KindFabric identify the native format.
const (
	APIVersion = "gpucloud/v1"
	KindFabric = "Fabric"
)

// Document is the native, versioned form of a fabric (YAML or JSON). Nodes
// are written as hostlist expressions per leaf, so a 16,384-node fleet is a
// few hundred lines.
type Document struct {
	APIVersion string     `json:"apiVersion" yaml:"apiVersion"`
	Kind       string     `json:"kind" yaml:"kind"`
	Metadata   Metadata   `json:"metadata" yaml:"metadata"`
	Spec       FabricSpec `json:"spec" yaml:"spec"`
}

// Metadata names the fabric.
type Metadata struct {
	Name string `json:"name" yaml:"name"`
}

// FabricSpec holds the hardware classes, the domain tree and the multi-node
// NVLink domains.
type FabricSpec struct {
	NodeClasses   []NodeClass `json:"nodeClasses" yaml:"nodeClasses"`
	Domains       []DomainDoc `json:"domains" yaml:"domains"`
	NVLinkDomains []NVLinkDoc `json:"nvlinkDomains,omitempty" yaml:"nvlinkDomains,omitempty"`
}

// DomainDoc is one domain; parents come before their children.
type DomainDoc struct {
	Name        string      `json:"name" yaml:"name"`
	Level       string      `json:"level" yaml:"level"`
	Parent      string      `json:"parent,omitempty" yaml:"parent,omitempty"`
	Switches    int         `json:"switches,omitempty" yaml:"switches,omitempty"`
	SwitchNames []string    `json:"switchNames,omitempty" yaml:"switchNames,omitempty,flow"`
	SwitchPorts int         `json:"switchPorts,omitempty" yaml:"switchPorts,omitempty"`
	UplinkGbps  float64     `json:"uplinkGbps,omitempty" yaml:"uplinkGbps,omitempty"`
	Nodes       []NodeGroup `json:"nodes,omitempty" yaml:"nodes,omitempty"`
}

// NodeGroup is a hostlist of nodes of one class under a leaf.
type NodeGroup struct {
	Hosts string `json:"hosts" yaml:"hosts"`
	Class string `json:"class" yaml:"class"`
}

// NVLinkDoc is a multi-node NVLink domain.
type NVLinkDoc struct {
	Name  string `json:"name" yaml:"name"`
	Hosts string `json:"hosts" yaml:"hosts"`
}

func parseNative(name string, data []byte) (*Fabric, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if err == io.EOF {
			return nil, errorf(name, 0, "file is empty")
		}
		return nil, yamlError(name, err)
	}
	var doc Document
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(&doc); err != nil {
		return nil, yamlError(name, err)
	}
	if doc.APIVersion != APIVersion || doc.Kind != KindFabric {
		return nil, errorf(name, 1, "want apiVersion %s and kind %s, got %q and %q", APIVersion, KindFabric, doc.APIVersion, doc.Kind)
	}
	lines := domainLines(&root)
	line := func(i int) int {
		if i < len(lines) {
			return lines[i]
		}
		return 0
	}
	b := NewBuilder(doc.Metadata.Name)
	for _, c := range doc.Spec.NodeClasses {
		if c.Name == "" {
			return nil, errorf(name, 0, "spec.nodeClasses: a class has no name")
		}
		if _, dup := b.ClassIndex(c.Name); dup {
			return nil, errorf(name, 0, "spec.nodeClasses: class %q defined twice", c.Name)
		}
		b.AddClass(c)
	}
	for i, dd := range doc.Spec.Domains {
		where := fmt.Sprintf("spec.domains[%d]", i)
		lvl, err := ParseLevel(dd.Level)
		if err != nil {
			return nil, errorf(name, line(i), "%s.level: %v", where, err)
		}
		parent := NoDomain
		if dd.Parent != "" {
			p, ok := b.f.domByName[dd.Parent]
			if !ok {
				return nil, errorf(name, line(i), "%s.parent: no domain %q defined before it", where, dd.Parent)
			}
			parent = p
		}
		id, err := b.AddDomain(Domain{Name: dd.Name, Level: lvl, Parent: parent, Switches: dd.Switches,
			SwitchNames: dd.SwitchNames, SwitchPorts: dd.SwitchPorts, UplinkGbps: dd.UplinkGbps})
		if err != nil {
			return nil, errorf(name, line(i), "%s: %v", where, err)
		}
		if len(dd.Nodes) > 0 && lvl != LevelLeaf {
			return nil, errorf(name, line(i), "%s: only leaf domains hold nodes, %q is a %s", where, dd.Name, lvl)
		}
		for j, g := range dd.Nodes {
			cls, ok := b.ClassIndex(g.Class)
			if !ok {
				return nil, errorf(name, line(i), "%s.nodes[%d].class: unknown node class %q", where, j, g.Class)
			}
			hosts, err := ExpandHostlist(g.Hosts)
			if err != nil {
				return nil, errorf(name, line(i), "%s.nodes[%d].hosts: %v", where, j, err)
			}
			for _, h := range hosts {
				if _, err := b.AddNode(h, cls, id); err != nil {
					return nil, errorf(name, line(i), "%s: %v", where, err)
				}
			}
		}
	}
	for i, nv := range doc.Spec.NVLinkDomains {
		hosts, err := ExpandHostlist(nv.Hosts)
		if err != nil {
			return nil, errorf(name, 0, "spec.nvlinkDomains[%d].hosts: %v", i, err)
		}
		ids := make([]NodeID, 0, len(hosts))
		for _, h := range hosts {
			id, ok := b.f.nodeByName[h]
			if !ok {
				return nil, errorf(name, 0, "spec.nvlinkDomains[%d]: unknown node %q", i, h)
			}
			ids = append(ids, id)
		}
		if err := b.AddNVLinkDomain(nv.Name, ids); err != nil {
			return nil, errorf(name, 0, "spec.nvlinkDomains[%d]: %v", i, err)
		}
	}
	f, err := b.Build()
	if err != nil {
		return nil, errorf(name, 0, "%v", err)
	}
	return f, nil
}

// domainLines returns the line of each entry of spec.domains, so that
// semantic errors can point at the domain they are about.
func domainLines(root *yaml.Node) []int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	spec := mapValue(n, "spec")
	doms := mapValue(spec, "domains")
	if doms == nil || doms.Kind != yaml.SequenceNode {
		return nil
	}
	lines := make([]int, len(doms.Content))
	for i, c := range doms.Content {
		lines[i] = c.Line
	}
	return lines
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// yamlError turns a yaml.v3 error ("yaml: line 3: ...") into FILE:LINE: form.
func yamlError(name string, err error) error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: ")
	if te, ok := err.(*yaml.TypeError); ok && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	var line int
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		msg = strings.TrimSpace(msg[strings.IndexByte(msg, ':')+1:])
	}
	return errorf(name, line, "%s", msg)
}

// Document returns the native form of f.
func (f *Fabric) Document() *Document {
	doc := &Document{APIVersion: APIVersion, Kind: KindFabric, Metadata: Metadata{Name: f.Name}}
	doc.Spec.NodeClasses = append([]NodeClass(nil), f.Classes...)
	doc.Spec.Domains = make([]DomainDoc, len(f.Domains))
	for i, d := range f.Domains {
		dd := DomainDoc{Name: d.Name, Level: d.Level.String(), Switches: d.Switches,
			SwitchNames: d.SwitchNames, SwitchPorts: d.SwitchPorts, UplinkGbps: d.UplinkGbps}
		if d.Parent != NoDomain {
			dd.Parent = f.Domains[d.Parent].Name
		}
		if len(d.SwitchNames) == d.Switches {
			dd.Switches = 0 // implied by the names
		}
		dd.Nodes = nodeGroups(f, f.leafNodes[i])
		doc.Spec.Domains[i] = dd
	}
	for _, nv := range f.NVLinks {
		if len(nv.Nodes) < 2 {
			continue
		}
		names := make([]string, len(nv.Nodes))
		for i, n := range nv.Nodes {
			names[i] = f.Nodes[n].Name
		}
		doc.Spec.NVLinkDomains = append(doc.Spec.NVLinkDomains, NVLinkDoc{Name: nv.Name, Hosts: CompressHostlist(names)})
	}
	return doc
}

// nodeGroups folds a leaf's nodes into runs of one class.
func nodeGroups(f *Fabric, nodes []NodeID) []NodeGroup {
	var groups []NodeGroup
	for i := 0; i < len(nodes); {
		cls := f.Nodes[nodes[i]].Class
		j := i
		var names []string
		for j < len(nodes) && f.Nodes[nodes[j]].Class == cls {
			names = append(names, f.Nodes[nodes[j]].Name)
			j++
		}
		groups = append(groups, NodeGroup{Hosts: CompressHostlist(names), Class: f.Classes[cls].Name})
		i = j
	}
	return groups
}

// WriteYAML writes f in the native format.
func (f *Fabric) WriteYAML(w io.Writer) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(f.Document()); err != nil {
		return err
	}
	return enc.Close()
}
