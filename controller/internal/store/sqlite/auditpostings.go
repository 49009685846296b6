package sqlite

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// This file: the encoding of a posting list (auditindex.go).

// posting is one record in a key's posting list: its seq and its time
// (UTC Unix µs).
type posting struct {
	seq  int64
	time int64
}

// after reports whether p comes before q in search order (newest first
// by time, then seq).
func (p posting) after(q posting) bool {
	if p.time != q.time {
		return p.time > q.time
	}
	return p.seq > q.seq
}

// appendPostings appends ps (seqs ascending) in the stored form: the
// first seq and time as varints, then for each next one the seq's
// increase (uvarint, at least 1) and the time's change (varint: a
// gateway's late record can be older than the one before it). A bucket's
// records are a few seconds apart, so an entry takes 3 to 5 bytes.
func appendPostings(b []byte, ps []posting) []byte {
	var prev posting
	for i, p := range ps {
		if i == 0 {
			b = binary.AppendUvarint(b, uint64(p.seq))
		} else {
			b = binary.AppendUvarint(b, uint64(p.seq-prev.seq))
		}
		b = binary.AppendVarint(b, p.time-prev.time)
		prev = p
	}
	return b
}

var errBadPostings = errors.New("malformed posting list")

// decodePostings appends the postings b holds to out. A list that is
// cut, overflows, or whose seqs do not increase is an error (the file
// was damaged or edited), never a panic: the caller reports it and the
// indexer rebuilds.
func decodePostings(out []posting, b []byte) ([]posting, error) {
	var prev posting
	for first := true; len(b) > 0; first = false {
		d, n := binary.Uvarint(b)
		if n <= 0 {
			return out, errBadPostings
		}
		b = b[n:]
		dt, n := binary.Varint(b)
		if n <= 0 {
			return out, errBadPostings
		}
		b = b[n:]
		var p posting
		if first {
			if d < 1 || d > 1<<62 {
				return out, fmt.Errorf("%w: seq %d", errBadPostings, d)
			}
			p.seq = int64(d)
		} else {
			if d < 1 || d > 1<<62 || prev.seq > 1<<62-int64(d) {
				return out, fmt.Errorf("%w: seq step %d after %d", errBadPostings, d, prev.seq)
			}
			p.seq = prev.seq + int64(d)
		}
		p.time = prev.time + dt // wraps on garbage: a wrong time, not a crash
		out = append(out, p)
		prev = p
	}
	return out, nil
}
