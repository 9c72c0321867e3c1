package server

import (
	"encoding/json"
	"fmt"
	"sort"

	"gpucloud/internal/api"
	"gpucloud/internal/topology"
)

// LocalLeaf is the leaf that registered nodes the fabric does not list
// hang from: a machine joined by its agent alone still gets work, and the
// scheduler treats it as one more leaf (no InfiniBand locality claimed).
const LocalLeaf = "local"

// fabricLeaf tells where a node sits: its leaf in the configured fabric,
// or LocalLeaf.
func (s *Server) fabricLeaf(name string) (string, bool) {
	f := s.cfg.Fabric
	if f == nil {
		return LocalLeaf, false
	}
	id, ok := f.NodeByName(name)
	if !ok {
		return LocalLeaf, false
	}
	return f.Domains[f.Nodes[id].Leaf].Name, true
}

func (s *Server) fabricNode(name string) topology.NodeID {
	id, _ := s.cfg.Fabric.NodeByName(name)
	return id
}

// buildFabric returns the fabric the scheduler works on: the configured
// one plus every registered node it does not list, under leaf "local" with
// a node class per GPU model and count. It returns nil when there is no
// node at all.
func buildFabric(base *topology.Fabric, nodes []*api.Node) (*topology.Fabric, error) {
	var extra []*api.Node
	for _, n := range nodes {
		if base != nil {
			if _, ok := base.NodeByName(n.Metadata.Name); ok {
				continue
			}
		}
		if len(n.Status.Inventory.GPUs) == 0 {
			continue // nothing to schedule on
		}
		extra = append(extra, n)
	}
	if len(extra) == 0 {
		if base == nil || len(base.Nodes) == 0 {
			return nil, nil
		}
		return base, nil
	}
	sort.Slice(extra, func(i, j int) bool { return extra[i].Metadata.Name < extra[j].Metadata.Name })
	doc := &topology.Document{APIVersion: topology.APIVersion, Kind: topology.KindFabric, Metadata: topology.Metadata{Name: "local"}}
	if base != nil {
		doc = base.Document()
	}
	for _, d := range doc.Spec.Domains {
		if d.Name == LocalLeaf {
			return nil, fmt.Errorf("fabric %s already has a domain named %q; rename it", doc.Metadata.Name, LocalLeaf)
		}
	}
	classes := map[string]bool{}
	for _, c := range doc.Spec.NodeClasses {
		classes[c.Name] = true
	}
	leaf := topology.DomainDoc{Name: LocalLeaf, Level: "leaf"}
	for _, n := range extra {
		inv := n.Status.Inventory
		model, mem := inv.GPUs[0].Model, inv.GPUs[0].MemoryMiB/1024
		cls := fmt.Sprintf("local-%d-%s-%dg", len(inv.GPUs), sanitize(model), mem)
		if !classes[cls] {
			classes[cls] = true
			c := topology.NodeClass{Name: cls, GPUModel: model, GPUs: len(inv.GPUs), GPUMemoryGiB: mem, Rails: len(inv.HCAs)}
			for _, h := range inv.HCAs {
				c.HCAs = append(c.HCAs, h.Name)
				c.RailGbps = h.RateGbps
			}
			doc.Spec.NodeClasses = append(doc.Spec.NodeClasses, c)
		}
		leaf.Nodes = append(leaf.Nodes, topology.NodeGroup{Hosts: n.Metadata.Name, Class: cls})
	}
	doc.Spec.Domains = append(doc.Spec.Domains, leaf)
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	f, _, err := topology.Parse("fabric+local", b, topology.FormatNative)
	if err != nil {
		return nil, fmt.Errorf("adding registered nodes to the fabric: %w", err)
	}
	return f, nil
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) == 0 {
		return "gpu"
	}
	return string(b)
}
