package sched

import "math/bits"

// bitset is a two-level bitmap over node IDs: finding the lowest set bit
// reads one summary word per 4,096 nodes, so a best-fit node is found in
// a handful of word operations even at 16,384 nodes.
type bitset struct {
	words []uint64
	sum   []uint64 // bit i set when words[i] != 0
}

func newBitset(n int) bitset {
	w := (n + 63) / 64
	return bitset{words: make([]uint64, w), sum: make([]uint64, (w+63)/64)}
}

func (b *bitset) set(i int) {
	w := i >> 6
	b.words[w] |= 1 << uint(i&63)
	b.sum[w>>6] |= 1 << uint(w&63)
}

func (b *bitset) clear(i int) {
	w := i >> 6
	b.words[w] &^= 1 << uint(i&63)
	if b.words[w] == 0 {
		b.sum[w>>6] &^= 1 << uint(w&63)
	}
}

func (b *bitset) has(i int) bool { return b.words[i>>6]&(1<<uint(i&63)) != 0 }

// first returns the lowest set bit, or -1.
func (b *bitset) first() int {
	for s, sw := range b.sum {
		if sw != 0 {
			w := s<<6 | bits.TrailingZeros64(sw)
			return w<<6 | bits.TrailingZeros64(b.words[w])
		}
	}
	return -1
}

func (b *bitset) clone() bitset {
	return bitset{words: append([]uint64(nil), b.words...), sum: append([]uint64(nil), b.sum...)}
}
