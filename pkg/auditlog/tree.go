package auditlog

import (
	"errors"
	"fmt"
	"math/bits"

	"golang.org/x/mod/sumdb/tlog"
)

// Tree is a Merkle tree being extended one leaf at a time, holding only
// its right edge: the roots of the complete subtrees that cover its leaves,
// largest first (at most 63). It computes the same hashes as
// tlog.StoredHashes and tlog.TreeHash without reading any others, so
// appending and verifying cost O(1) amortized per record and O(log n)
// memory.
type Tree struct {
	size  int64
	edge  []tlog.Hash // complete subtree roots, largest (leftmost) first
	level []int       // edge[i] covers 2^level[i] leaves
}

// NewTree returns the tree of size n whose complete subtrees (as
// [PrefixIndexes] lists them, largest first) have the hashes prefix.
func NewTree(n int64, prefix []tlog.Hash) (*Tree, error) {
	if n < 0 {
		return nil, fmt.Errorf("tree size %d is negative", n)
	}
	levels := prefixLevels(n)
	if len(prefix) != len(levels) {
		return nil, fmt.Errorf("a tree of size %d has %d complete subtrees, got %d hashes", n, len(levels), len(prefix))
	}
	return &Tree{size: n, edge: append([]tlog.Hash(nil), prefix...), level: levels}, nil
}

// Size is the number of leaves.
func (t *Tree) Size() int64 { return t.size }

// Append adds the leaf with hash h and appends to stored what tlog.StoredHashes
// returns for it: h, then the root of each subtree the leaf completes, bottom
// up. Those are the hashes the tree stores at indexes
// tlog.StoredHashIndex(0, n) onwards, where n is the leaf's position.
func (t *Tree) Append(h tlog.Hash, stored []tlog.Hash) []tlog.Hash {
	stored = append(stored, h)
	lvl := 0
	for len(t.edge) > 0 && t.level[len(t.level)-1] == lvl {
		h = tlog.NodeHash(t.edge[len(t.edge)-1], h)
		t.edge = t.edge[:len(t.edge)-1]
		t.level = t.level[:len(t.level)-1]
		lvl++
		stored = append(stored, h)
	}
	t.edge = append(t.edge, h)
	t.level = append(t.level, lvl)
	t.size++
	return stored
}

// Root is the tree hash (tlog.TreeHash) of the current size; the zero
// Hash for an empty tree.
func (t *Tree) Root() tlog.Hash {
	if len(t.edge) == 0 {
		return tlog.Hash{}
	}
	h := t.edge[len(t.edge)-1]
	for i := len(t.edge) - 2; i >= 0; i-- {
		h = tlog.NodeHash(t.edge[i], h)
	}
	return h
}

// Edge returns the complete subtree hashes of the current size, largest
// first: the prefix a [NewTree] of this size needs.
func (t *Tree) Edge() []tlog.Hash { return append([]tlog.Hash(nil), t.edge...) }

// prefixLevels returns the levels of the complete subtrees covering
// [0, n), largest first: n's one bits from the top.
func prefixLevels(n int64) []int {
	var out []int
	for l := 62; l >= 0; l-- {
		if n&(1<<l) != 0 {
			out = append(out, l)
		}
	}
	return out
}

// PrefixIndexes returns the tlog storage indexes of the complete subtrees
// covering the first n leaves, largest first: the hashes [NewTree] needs
// to continue a tree of size n, and the ones tlog.TreeHash(n) reads.
func PrefixIndexes(n int64) []int64 {
	out := make([]int64, 0, bits.OnesCount64(uint64(n)))
	var lo int64
	for _, l := range prefixLevels(n) {
		out = append(out, tlog.StoredHashIndex(l, lo>>l))
		lo += 1 << l
	}
	return out
}

// StoredAt says where the hash at tlog storage index i is kept when each
// leaf's stored hashes (what [Tree.Append] returns) are kept with the leaf:
// with the leaf at position leaf, as the offset-th hash of its list.
func StoredAt(i int64) (leaf int64, offset int, err error) {
	if i < 0 {
		return 0, 0, errors.New("negative stored hash index")
	}
	level, n := tlog.SplitStoredHashIndex(i)
	// The subtree n at this level ends at leaf (n+1)<<level - 1, whose
	// Append completes it as its level-th parent.
	return (n+1)<<level - 1, level, nil
}
