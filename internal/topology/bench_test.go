package topology

import (
	"bytes"
	"runtime"
	"testing"
)

// BenchmarkGenerate131k builds the 131,072-GPU ndv5 fleet and reports the
// heap it keeps per GPU.
func BenchmarkGenerate131k(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Generate("ndv5", 131072); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(retainedBytes(func() any { f, _ := Generate("ndv5", 131072); return f })/131072, "bytes/gpu")
}

// BenchmarkLoad131k parses the native file of the 131,072-GPU fleet.
func BenchmarkLoad131k(b *testing.B) {
	f, err := Generate("ndv5", 131072)
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if err := f.WriteYAML(&buf); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Parse("ndv5.yaml", buf.Bytes(), FormatAuto); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(retainedBytes(func() any {
		g, _, _ := Parse("ndv5.yaml", buf.Bytes(), FormatAuto)
		return g
	})/131072, "bytes/gpu")
}

// BenchmarkState131k reports the per-GPU heap of the allocation state.
func BenchmarkNewState131k(b *testing.B) {
	f, _ := Generate("ndv5", 131072)
	for b.Loop() {
		NewState(f)
	}
	b.ReportMetric(retainedBytes(func() any { return NewState(f) })/131072, "bytes/gpu")
}

func BenchmarkAllocateRelease131k(b *testing.B) {
	f, _ := Generate("ndv5", 131072)
	s := NewState(f)
	n := NodeID(0)
	for b.Loop() {
		if err := s.Allocate(n, 0b1111); err != nil {
			b.Fatal(err)
		}
		if err := s.Release(n, 0b1111); err != nil {
			b.Fatal(err)
		}
		n = (n + 7919) % NodeID(len(f.Nodes))
	}
}

func BenchmarkCapacity131k(b *testing.B) {
	f, _ := Generate("ndv5", 131072)
	s := NewState(f)
	leaves := f.DomainsAt(LevelLeaf)
	sum := 0
	i := 0
	for b.Loop() {
		sum += s.Capacity(leaves[i%len(leaves)], UnitNode)
		i++
	}
	_ = sum
}

// BenchmarkSmallestFit131k asks for the best-fit domain for a 128-node gang
// on a fleet where every leaf is partly used, so the search visits the leaf
// and block levels.
func BenchmarkSmallestFit131k(b *testing.B) {
	f, _ := Generate("ndv5", 131072)
	s := NewState(f)
	for i := range f.Nodes {
		if i%3 == 0 {
			_ = s.Allocate(NodeID(i), 1)
		}
	}
	for b.Loop() {
		if _, ok := s.SmallestFit(128, UnitNode, LevelLeaf); !ok {
			b.Fatal("no fit")
		}
	}
}

func retainedBytes(build func() any) float64 {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	v := build()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(v)
	return float64(after.HeapAlloc) - float64(before.HeapAlloc)
}
