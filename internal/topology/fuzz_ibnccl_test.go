package topology

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
)

// ibncclSeeds adds the testdata files matching the patterns as seeds.
func ibncclSeeds(f *testing.F, patterns ...string) {
	for _, p := range patterns {
		files, err := filepath.Glob(filepath.Join("testdata", p))
		if err != nil || len(files) == 0 {
			f.Fatalf("no seed files for %s", p)
		}
		for _, file := range files {
			f.Add(ibReadTestdata(f, file))
		}
	}
}

// ibncclCheckError asserts that a failed parse says where, inside the file.
func ibncclCheckError(t *testing.T, name string, data []byte, err error) {
	t.Helper()
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("error is not an *Error: %v", err)
	}
	if lines := bytes.Count(data, []byte("\n")) + 1; pe.File != name || pe.Line < 0 || pe.Line > lines {
		t.Fatalf("error outside the %d-line file: %v", lines, err)
	}
	if pe.Msg == "" {
		t.Fatal("error without a message")
	}
}

func FuzzIBNetDiscover(f *testing.F) {
	ibncclSeeds(f, "ibnetdiscover-*.out")
	f.Add([]byte(ibTwoSU().String()))
	f.Add([]byte(newIBFab().Switch("l1", "l2", "l3", "l4", "s1", "s2", "s3", "s4", "core").
		Host("n1", "mlx5_0@l1").Host("n2", "mlx5_0@l2").Host("n3", "mlx5_0@l3").Host("n4", "mlx5_0@l4").
		Link("l1", "s1", 1).Link("l2", "s1", 1).Link("l3", "s3", 1).Link("l4", "s3", 1).
		Link("s1", "core", 1).Link("s3", "core", 1).CA("Mellanox Technologies Aggregation Node", "core").String()))
	f.Add([]byte(ibTwoSU().Host("n9", "mlx5_0@leaf-a0", "mlx5_1@leaf-b1").String()))
	f.Fuzz(func(t *testing.T, data []byte) {
		fab, err := ParseIBNetDiscover("fuzz.out", data, IBNetDiscoverOptions{})
		if err != nil {
			ibncclCheckError(t, "fuzz.out", data, err)
			return
		}
		ibncclCheckFabric(t, fab)
		for i := range fab.Nodes {
			c := fab.Class(NodeID(i))
			if c.Rails != len(c.HCAs) || c.Rails == 0 {
				t.Fatalf("node %s: %d rails, HCAs %v", fab.Nodes[i].Name, c.Rails, c.HCAs)
			}
		}
	})
}

func FuzzNCCLXML(f *testing.F) {
	ibncclSeeds(f, "azure-*.xml", "nccl-*.xml")
	f.Add([]byte(`<system><cpu numaid="0"><pci busid="0000:01:00.0"><gpu dev="1"/></pci><nic><net name="eth0"/></nic></cpu></system>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		topo, err := ParseNCCLTopo("fuzz.xml", data)
		if err != nil {
			ibncclCheckError(t, "fuzz.xml", data, err)
			return
		}
		for _, g := range topo.GPUs {
			if g.NIC >= len(topo.NICs) || (g.NIC >= 0 && !topo.NICs[g.NIC].RDMA) || (g.NIC >= 0) == (g.Path == "") {
				t.Fatalf("GPU %+v: NIC out of range, not a rail, or path %q does not match", g, g.Path)
			}
		}
		fab, err := ParseNCCLXML("fuzz.xml", data, NCCLXMLOptions{})
		if err != nil {
			t.Fatalf("ParseNCCLTopo accepts what ParseNCCLXML refuses: %v", err)
		}
		if c := fab.Classes[0]; c.GPUs != len(topo.GPUs) || (c.Rails > 0 && len(c.GPURail) != c.GPUs) {
			t.Fatalf("class %+v from %d GPUs", c, len(topo.GPUs))
		}
		ibncclCheckFabric(t, fab)
	})
}
