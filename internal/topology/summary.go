package topology

import "sort"

// Count is a named count, for summaries.
type Count struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

// Ratio is a named ratio, for summaries.
type Ratio struct {
	Name  string  `json:"name"`
	Ratio float64 `json:"ratio"`
}

// Summary is what `gpucloud topology show` and `validate` print.
type Summary struct {
	Name          string         `json:"name"`
	Nodes         int            `json:"nodes"`
	GPUs          int            `json:"gpus"`
	Switches      int            `json:"switches"`
	Levels        []Count        `json:"levels"`  // switches per tier, bottom-up: leaf, spine, core
	Domains       []Count        `json:"domains"` // scheduling domains per level, bottom-up
	GPUModels     map[string]int `json:"gpu_models"`
	NVLinkDomains int            `json:"nvlink_domains"`
	MaxNVLinkGPUs int            `json:"max_nvlink_domain_gpus"`
	InjectionGbps float64        `json:"injection_gbps"`
	// BisectionGbps is half the narrowest total bandwidth across any tier of
	// the tree (injection included); absent when uplinks are not known.
	BisectionGbps *float64 `json:"bisection_gbps,omitempty"`
	// Oversubscription is, per level, the worst ratio of bandwidth into a
	// domain from below to its uplink bandwidth (1 is non-blocking).
	Oversubscription []Ratio `json:"oversubscription,omitempty"`
	// Warnings is what the loader set aside (Fabric.Warnings).
	Warnings []string `json:"warnings,omitempty"`
}

// Summarize counts a fabric.
func (f *Fabric) Summarize() Summary {
	s := Summary{Name: f.Name, Nodes: len(f.Nodes), GPUs: f.gpus, GPUModels: map[string]int{}, NVLinkDomains: len(f.NVLinks),
		Warnings: f.Warnings}
	for i := range f.Nodes {
		c := f.Class(NodeID(i))
		s.GPUModels[c.GPUModel] += c.GPUs
		s.InjectionGbps += float64(c.Rails) * c.RailGbps
	}
	for _, nv := range f.NVLinks {
		g := 0
		for _, n := range nv.Nodes {
			g += f.NodeGPUs(n)
		}
		s.MaxNVLinkGPUs = max(s.MaxNVLinkGPUs, g)
	}
	tiers := map[int]int{}
	for i, d := range f.Domains {
		s.Switches += d.Switches
		if t := int(f.tier[i]); t >= 0 {
			tiers[t] += d.Switches
		}
	}
	for t := 0; t < len(tiers); t++ {
		s.Levels = append(s.Levels, Count{Name: TierName(t), Count: tiers[t]})
	}
	for _, l := range f.Levels() {
		s.Domains = append(s.Domains, Count{Name: l.String(), Count: len(f.byLevel[l])})
	}
	s.BisectionGbps, s.Oversubscription = f.bandwidth(s.InjectionGbps)
	return s
}

// bandwidth derives bisection and oversubscription from the uplinks. Below
// the root every level's uplinks together form a cut between the nodes and
// the rest of the tree; the narrowest such cut, halved, bounds the bandwidth
// between two halves of the machine.
func (f *Fabric) bandwidth(injection float64) (*float64, []Ratio) {
	down := make([]float64, len(f.Domains)) // bandwidth arriving from below
	for i := range f.Nodes {
		c := f.Class(NodeID(i))
		down[f.Nodes[i].Leaf] += float64(c.Rails) * c.RailGbps
	}
	// Children have larger IDs than their parents.
	for i := len(f.Domains) - 1; i >= 0; i-- {
		if p := f.Domains[i].Parent; p != NoDomain {
			down[p] += f.Domains[i].UplinkGbps
		}
	}
	worst := map[Level]float64{}
	cut := map[Level]float64{}
	complete := map[Level]bool{}
	for i, d := range f.Domains {
		// Under a purely logical parent (a region, or the cluster above a
		// single leaf) there is no link to cut.
		if d.Parent == NoDomain || f.Domains[d.Parent].Switches == 0 {
			continue
		}
		if _, seen := complete[d.Level]; !seen {
			complete[d.Level] = true
		}
		if d.UplinkGbps == 0 {
			complete[d.Level] = false
			continue
		}
		cut[d.Level] += d.UplinkGbps
		if down[i] > 0 {
			worst[d.Level] = max(worst[d.Level], down[i]/d.UplinkGbps)
		}
	}
	var ratios []Ratio
	levels := make([]Level, 0, len(worst))
	for l := range worst {
		levels = append(levels, l)
	}
	sort.Slice(levels, func(a, b int) bool { return levels[a] < levels[b] })
	for _, l := range levels {
		ratios = append(ratios, Ratio{Name: l.String(), Ratio: worst[l]})
	}
	if injection == 0 {
		return nil, ratios
	}
	narrowest := injection
	for l, ok := range complete {
		if !ok {
			return nil, ratios
		}
		narrowest = min(narrowest, cut[l])
	}
	b := narrowest / 2
	return &b, ratios
}
