package topology

// Slurm topology.yaml: a list of named topologies, each of one type (tree,
// block, flat, ring, torus3d). A fabric is one network, so one topology is
// loaded: the first with cluster_default: true when it is a tree or a block
// topology, else the first tree or block topology. Every other topology is
// skipped with a warning. A file with only flat, ring or torus3d topologies
// is an error: they give no switch tree or NVLink grouping to model.
//
// The loaded topology goes through the same checks and mapping as
// topology.conf (see slurm.go): tree switches (switch, children, nodes, and
// link_speed like LinkSpeed=) become switch domains; blocks (block, nodes,
// block_sizes) become leaf and NVLink domains under one cluster. Errors name
// the line of the offending YAML node.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ParseSlurmYAML parses a Slurm topology.yaml. name is used in errors and to
// name the fabric.
func ParseSlurmYAML(name string, data []byte, opts SlurmOptions) (*Fabric, error) {
	in, err := readSlurmYAML(name, data)
	if err != nil {
		return nil, err
	}
	return in.build(slurmFabricName(name), opts)
}

func parseSlurmYAML(name string, data []byte) (*Fabric, error) {
	return ParseSlurmYAML(name, data, SlurmOptions{})
}

// Topology types of topology.yaml.
var slurmTopologyTypes = []string{"tree", "block", "flat", "ring", "torus3d"}

type yamlTopology struct {
	name      string
	line      int
	isDefault bool
	kind      string
	body      *yaml.Node
	kindLine  int
}

func readSlurmYAML(file string, data []byte) (*slurmInput, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errorf(file, 0, "file is empty: expected a list of topologies (- topology: NAME)")
	}
	if err := checkTextLines(file, data, "topology.yaml"); err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errorf(file, 0, "file is empty: expected a list of topologies (- topology: NAME)")
		}
		return nil, yamlError(file, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, errorf(file, extra.Line, "a second YAML document: expected one list of topologies")
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlError(file, err)
	}
	root := resolveYAML(&doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = resolveYAML(root.Content[0])
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil, errorf(file, 0, "no topologies: expected a list of topologies (- topology: NAME)")
	}
	if root.Kind != yaml.SequenceNode {
		return nil, errorf(file, root.Line, "expected a list of topologies (- topology: NAME), got %s", yamlKind(root))
	}
	if len(root.Content) == 0 {
		return nil, errorf(file, root.Line, "the list of topologies is empty")
	}
	topos := make([]yamlTopology, 0, len(root.Content))
	byName := map[string]int{}
	for _, item := range root.Content {
		t, err := readYAMLTopology(file, resolveYAML(item))
		if err != nil {
			return nil, err
		}
		if prev, dup := byName[t.name]; dup {
			return nil, errorf(file, t.line, "topology %q defined twice (first on line %d)", t.name, topos[prev].line)
		}
		byName[t.name] = len(topos)
		topos = append(topos, t)
	}

	chosen, def := -1, -1
	for i := range topos {
		if topos[i].isDefault {
			def = i
			if topos[i].kind == "tree" || topos[i].kind == "block" {
				chosen = i
			}
			break
		}
	}
	if chosen < 0 {
		for i := range topos {
			if topos[i].kind == "tree" || topos[i].kind == "block" {
				chosen = i
				break
			}
		}
	}
	if chosen < 0 {
		kinds := make([]string, len(topos))
		for i := range topos {
			kinds[i] = fmt.Sprintf("%s (%s)", topos[i].name, topos[i].kind)
		}
		return nil, errorf(file, root.Line, "no tree or block topology, only %s: flat, ring and torus3d topologies are not modelled", listSome(kinds))
	}
	in := &slurmInput{file: file, yaml: true}
	for i := range topos {
		switch {
		case i == chosen:
		case i == def:
			in.warnings = append(in.warnings, fmt.Sprintf("topology %q (%s) skipped although it is the cluster_default: %s is not modelled; loaded %q (%s)",
				topos[i].name, topos[i].kind, topos[i].kind, topos[chosen].name, topos[chosen].kind))
		default:
			in.warnings = append(in.warnings, fmt.Sprintf("topology %q (%s) skipped: one topology is loaded, %q (%s)",
				topos[i].name, topos[i].kind, topos[chosen].name, topos[chosen].kind))
		}
	}
	t := &topos[chosen]
	var err error
	if t.kind == "tree" {
		err = in.readYAMLTree(t)
	} else {
		err = in.readYAMLBlock(t)
	}
	if err != nil {
		return nil, err
	}
	return in, nil
}

// readYAMLTopology reads the keys of one list item.
func readYAMLTopology(file string, n *yaml.Node) (yamlTopology, error) {
	t := yamlTopology{line: n.Line}
	if n.Kind != yaml.MappingNode {
		return t, errorf(file, n.Line, "expected a topology (topology: NAME, and one of %s), got %s", strings.Join(slurmTopologyTypes, ", "), yamlKind(n))
	}
	hasName := false
	err := eachYAMLKey(file, n, func(key string, k, v *yaml.Node) error {
		switch key {
		case "topology":
			s, err := yamlString(file, "topology", v)
			if err != nil {
				return err
			}
			t.name, hasName = s, true
		case "cluster_default":
			var b bool
			if v.Kind != yaml.ScalarNode || v.Decode(&b) != nil {
				return errorf(file, v.Line, "cluster_default: expected true or false, got %q", v.Value)
			}
			t.isDefault = b
		case "tree", "block", "flat", "ring", "torus3d":
			if t.kind != "" {
				return errorf(file, k.Line, "topology has both %s and %s: expected exactly one type", t.kind, key)
			}
			t.kind, t.body, t.kindLine = key, v, k.Line
		default:
			return errorf(file, k.Line, "unknown key %q: expected topology, cluster_default or one of %s", key, strings.Join(slurmTopologyTypes, ", "))
		}
		return nil
	})
	if err != nil {
		return t, err
	}
	if !hasName {
		return t, errorf(file, n.Line, "topology without a name: expected topology: NAME")
	}
	if t.kind == "" {
		return t, errorf(file, n.Line, "topology %q has no type: expected one of %s", t.name, strings.Join(slurmTopologyTypes, ", "))
	}
	return t, nil
}

func (in *slurmInput) readYAMLTree(t *yamlTopology) error {
	body := t.body
	if body.Kind != yaml.MappingNode {
		return errorf(in.file, t.kindLine, "topology %q: tree: expected switches:, got %s", t.name, yamlKind(body))
	}
	var list *yaml.Node
	err := eachYAMLKey(in.file, body, func(key string, k, v *yaml.Node) error {
		if key != "switches" {
			return errorf(in.file, k.Line, "tree: unknown key %q: expected switches", key)
		}
		list = v
		return nil
	})
	if err != nil {
		return err
	}
	if list == nil || list.Kind != yaml.SequenceNode || len(list.Content) == 0 {
		return errorf(in.file, t.kindLine, "topology %q: tree: expected a list of switches (switches: - switch: NAME)", t.name)
	}
	for _, item := range list.Content {
		item = resolveYAML(item)
		if item.Kind != yaml.MappingNode {
			return errorf(in.file, item.Line, "expected a switch (switch: NAME, children: or nodes:), got %s", yamlKind(item))
		}
		sw := slurmSwitch{line: item.Line, nodesLine: item.Line, childrenLine: item.Line}
		hasName := false
		err := eachYAMLKey(in.file, item, func(key string, k, v *yaml.Node) error {
			var err error
			switch key {
			case "switch":
				sw.name, err = yamlString(in.file, key, v)
				hasName = true
			case "children":
				sw.children, err = yamlString(in.file, key, v)
				sw.childrenLine = v.Line
			case "nodes":
				sw.nodes, err = yamlString(in.file, key, v)
				sw.nodesLine = v.Line
			case "link_speed":
				var u uint64
				u, err = strconv.ParseUint(v.Value, 10, 32)
				if err != nil || v.Kind != yaml.ScalarNode {
					return errorf(in.file, v.Line, "link_speed: expected a whole number from 0 to %d, got %q", uint32(1<<32-1), v.Value)
				}
				sw.linkSpeed, sw.hasLinkSpeed = float64(u), true
			default:
				return errorf(in.file, k.Line, "switch: unknown key %q: expected switch, children, nodes or link_speed", key)
			}
			return err
		})
		if err != nil {
			return err
		}
		if !hasName {
			return errorf(in.file, item.Line, "switch without a name: expected switch: NAME")
		}
		in.switches = append(in.switches, sw)
	}
	return nil
}

func (in *slurmInput) readYAMLBlock(t *yamlTopology) error {
	body := t.body
	if body.Kind != yaml.MappingNode {
		return errorf(in.file, t.kindLine, "topology %q: block: expected blocks: and block_sizes:, got %s", t.name, yamlKind(body))
	}
	var list *yaml.Node
	err := eachYAMLKey(in.file, body, func(key string, k, v *yaml.Node) error {
		switch key {
		case "blocks":
			list = v
		case "block_sizes":
			sizes, err := yamlBlockSizes(in.file, v)
			if err != nil {
				return err
			}
			in.blockSizes, in.blockSizesLine = sizes, v.Line
		default:
			return errorf(in.file, k.Line, "block: unknown key %q: expected blocks or block_sizes", key)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if list == nil || list.Kind != yaml.SequenceNode || len(list.Content) == 0 {
		return errorf(in.file, t.kindLine, "topology %q: block: expected a list of blocks (blocks: - block: NAME)", t.name)
	}
	for _, item := range list.Content {
		item = resolveYAML(item)
		if item.Kind != yaml.MappingNode {
			return errorf(in.file, item.Line, "expected a block (block: NAME, nodes: HOSTLIST), got %s", yamlKind(item))
		}
		bl := slurmBlock{line: item.Line}
		hasName := false
		err := eachYAMLKey(in.file, item, func(key string, k, v *yaml.Node) error {
			var err error
			switch key {
			case "block":
				bl.name, err = yamlString(in.file, key, v)
				hasName = true
			case "nodes":
				bl.nodes, err = yamlString(in.file, key, v)
			default:
				return errorf(in.file, k.Line, "block: unknown key %q: expected block or nodes", key)
			}
			return err
		})
		if err != nil {
			return err
		}
		if !hasName {
			return errorf(in.file, item.Line, "block without a name: expected block: NAME")
		}
		in.blocks = append(in.blocks, bl)
	}
	return nil
}

// yamlBlockSizes reads block_sizes: a list of numbers, or "8,16" as Slurm
// writes it in topology.conf.
func yamlBlockSizes(file string, v *yaml.Node) ([]int, error) {
	switch v.Kind {
	case yaml.ScalarNode:
		sizes, err := parseBlockSizes(v.Value)
		if err != nil {
			return nil, errorf(file, v.Line, "block_sizes: %v", err)
		}
		return sizes, nil
	case yaml.SequenceNode:
		sizes := make([]int, 0, len(v.Content))
		for _, c := range v.Content {
			c = resolveYAML(c)
			n, err := strconv.Atoi(c.Value)
			if c.Kind != yaml.ScalarNode || err != nil || n <= 0 {
				return nil, errorf(file, c.Line, "block_sizes: %q is not a positive whole number", c.Value)
			}
			sizes = append(sizes, n)
		}
		if err := checkBlockSizes(sizes); err != nil {
			return nil, errorf(file, v.Line, "block_sizes: %v", err)
		}
		return sizes, nil
	}
	return nil, errorf(file, v.Line, "block_sizes: expected a list of numbers, got %s", yamlKind(v))
}

// eachYAMLKey calls fn for each key of a mapping, refusing duplicate and
// non-scalar keys.
func eachYAMLKey(file string, m *yaml.Node, fn func(key string, k, v *yaml.Node) error) error {
	seen := make(map[string]int, len(m.Content)/2)
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := resolveYAML(m.Content[i]), resolveYAML(m.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			return errorf(file, k.Line, "expected a key, got %s", yamlKind(k))
		}
		if prev, dup := seen[k.Value]; dup {
			return errorf(file, k.Line, "key %q given twice (first on line %d)", k.Value, prev)
		}
		seen[k.Value] = k.Line
		if err := fn(k.Value, k, v); err != nil {
			return err
		}
	}
	return nil
}

// yamlString reads a non-empty scalar.
func yamlString(file, key string, v *yaml.Node) (string, error) {
	if v.Kind != yaml.ScalarNode || v.Tag == "!!null" || strings.TrimSpace(v.Value) == "" {
		return "", errorf(file, v.Line, "%s: expected a name or hostlist, got %s", key, yamlKind(v))
	}
	return v.Value, nil
}

// resolveYAML follows aliases to the node they name.
func resolveYAML(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}

func yamlKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

// checkTextLines refuses binary data, naming the first line that holds it.
func checkTextLines(file string, data []byte, what string) error {
	line := 1
	for len(data) > 0 {
		raw := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			raw, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if bytes.IndexByte(raw, 0) >= 0 {
			return errorf(file, line, "binary data (NUL byte): expected a text %s", what)
		}
		if !validUTF8(raw) {
			return errorf(file, line, "invalid UTF-8: expected a text %s", what)
		}
		line++
	}
	return nil
}
