package auditlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// A bundle is a range of the log that verifies on its own, with no
// controller: JSON lines, a [BundleHeader] first, then the canonical
// encoding of every record from FromSeq to ToSeq, one per line, in order.
// The header carries the signed checkpoint, the log's public key, the
// hashes of the complete subtrees before FromSeq (Prefix) and a
// consistency proof from the tree of size ToSeq to the checkpoint's tree
// (Proof). A verifier rebuilds the tree of size ToSeq from Prefix and the
// records and checks it with the proof against the signed root, so every
// record is proven to be where it is in the log the key signed.

// BundleFormat is the header's format field.
const BundleFormat = "cordon-audit-bundle/v1"

// MaxBundleHeaderSize bounds the header line.
const MaxBundleHeaderSize = 64 << 10

// BundleHeader is the first line of a bundle.
type BundleHeader struct {
	Format     string         `json:"format"`
	Key        string         `json:"key"`        // the log's verifier key (note encoding)
	Checkpoint string         `json:"checkpoint"` // signed checkpoint, size ≥ ToSeq
	FromSeq    int64          `json:"from_seq"`   // first record, ≥ 1
	ToSeq      int64          `json:"to_seq"`     // last record, ≥ FromSeq
	Prefix     []tlog.Hash    `json:"prefix"`     // PrefixIndexes(FromSeq-1), largest first
	Proof      tlog.TreeProof `json:"proof"`      // tlog.ProveTree(checkpoint size, ToSeq)
}

// AppendBundleHeader appends h as a bundle's first line (with its
// newline).
func AppendBundleHeader(b []byte, h BundleHeader) ([]byte, error) {
	h.Format = BundleFormat
	if h.Prefix == nil {
		h.Prefix = []tlog.Hash{}
	}
	if h.Proof == nil {
		h.Proof = tlog.TreeProof{}
	}
	j, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("encode bundle header: %w", err)
	}
	return append(append(b, j...), '\n'), nil
}

// VerifyOptions says what a verification must hold besides the bundle
// itself.
type VerifyOptions struct {
	// Key, if set, is the verifier key the log must be signed with (the
	// one the auditor pinned); otherwise the bundle's own key is used and
	// the result says which it was.
	Key string
	// Earlier, if set, is a signed checkpoint of the same log seen before
	// (by a gateway, an auditor, an earlier export): the bundle's log must
	// extend it. Its size must lie in [FromSeq-1, ToSeq] (the range whose
	// tree hashes the bundle rebuilds) or equal the checkpoint's.
	Earlier []byte
}

// BundleResult is what a bundle proved.
type BundleResult struct {
	Key        string
	Checkpoint Checkpoint
	FromSeq    int64
	ToSeq      int64
	// Root is the log's root hash at ToSeq records, as the bundle's
	// records rebuild it: for an archived range, the root its archive
	// record names.
	Root tlog.Hash
	// Earlier is the earlier checkpoint the log was shown to extend, if
	// one was given.
	Earlier *Checkpoint
}

// BadRecordError names the first record of a bundle or log that is wrong.
type BadRecordError struct {
	Seq  int64 // the record's expected sequence number
	Line int   // its line in the bundle (the header is line 1); 0 outside a bundle
	Err  error
}

func (e *BadRecordError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("record seq %d (line %d): %v", e.Seq, e.Line, e.Err)
	}
	return fmt.Sprintf("record seq %d: %v", e.Seq, e.Err)
}

func (e *BadRecordError) Unwrap() error { return e.Err }

// ErrNotSigned is wrapped when records do not hash to the signed tree: one
// of them was changed, removed, added or moved after the checkpoint was
// signed.
var ErrNotSigned = errors.New("the records do not hash to the signed checkpoint")

// VerifyBundle reads a bundle from r and checks it: the header parses, the
// checkpoint is signed by the key, every record is canonical and has the
// next sequence number, and the records with Prefix rebuild a tree that the
// proof shows inside the signed one. It reads r to the end and fails on
// the first thing wrong, naming the record.
func VerifyBundle(r io.Reader, o VerifyOptions) (*BundleResult, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	line, err := readLine(br, MaxBundleHeaderSize)
	if err != nil {
		return nil, fmt.Errorf("bundle header (line 1): %w", err)
	}
	var h BundleHeader
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("bundle header (line 1) is not a %s header: %w", BundleFormat, err)
	}
	if h.Format != BundleFormat {
		return nil, fmt.Errorf("bundle format %q: this cordonctl reads %q", clip(h.Format), BundleFormat)
	}
	key := h.Key
	if o.Key != "" && h.Key != o.Key {
		return nil, fmt.Errorf("bundle is signed by key %q, not the expected %q: it is not this controller's log", clip(h.Key), clip(o.Key))
	}
	cp, err := OpenCheckpoint([]byte(h.Checkpoint), key)
	if err != nil {
		return nil, fmt.Errorf("bundle checkpoint: %w", err)
	}
	if h.FromSeq < 1 || h.ToSeq < h.FromSeq || h.ToSeq > cp.Size {
		return nil, fmt.Errorf("bundle range seq %d to %d is not within the checkpoint's %d records", h.FromSeq, h.ToSeq, cp.Size)
	}
	var earlier *Checkpoint
	if o.Earlier != nil {
		ec, err := OpenCheckpoint(o.Earlier, key)
		if err != nil {
			return nil, fmt.Errorf("earlier checkpoint: %w", err)
		}
		switch {
		case ec.Size > cp.Size:
			return nil, fmt.Errorf("%w: the earlier checkpoint has %d records, the bundle's log only %d: it was truncated or rolled back", ErrInconsistent, ec.Size, cp.Size)
		case ec.Size != 0 && ec.Size < h.FromSeq-1, ec.Size > h.ToSeq && ec.Size < cp.Size:
			return nil, fmt.Errorf("the earlier checkpoint has %d records; this bundle (seq %d to %d of %d) can check only sizes %d to %d or %d: export a range that covers seq %d",
				ec.Size, h.FromSeq, h.ToSeq, cp.Size, h.FromSeq-1, h.ToSeq, cp.Size, ec.Size)
		}
		earlier = &ec
	}
	tree, err := NewTree(h.FromSeq-1, h.Prefix)
	if err != nil {
		return nil, fmt.Errorf("bundle header prefix: %w", err)
	}
	var (
		earlierRoot tlog.Hash
		stored      []tlog.Hash
	)
	if earlier != nil && earlier.Size == tree.Size() {
		earlierRoot = tree.Root() // the zero hash for size 0, as tlog has it
	}
	for seq := h.FromSeq; seq <= h.ToSeq; seq++ {
		lineNo := int(seq-h.FromSeq) + 2
		line, err := readLine(br, MaxRecordSize)
		if errors.Is(err, io.EOF) {
			return nil, &BadRecordError{Seq: seq, Line: lineNo, Err: fmt.Errorf("missing: the bundle ends after %d of its %d records", seq-h.FromSeq, h.ToSeq-h.FromSeq+1)}
		}
		if err != nil {
			return nil, &BadRecordError{Seq: seq, Line: lineNo, Err: err}
		}
		rec, err := ParseRecord(line)
		if err != nil {
			return nil, &BadRecordError{Seq: seq, Line: lineNo, Err: err}
		}
		if rec.Seq != seq {
			return nil, &BadRecordError{Seq: seq, Line: lineNo, Err: fmt.Errorf("found seq %d in its place: records were deleted, inserted or reordered", rec.Seq)}
		}
		stored = tree.Append(tlog.RecordHash(line), stored[:0])
		if earlier != nil && earlier.Size == tree.Size() {
			earlierRoot = tree.Root()
		}
	}
	if _, err := readLine(br, MaxRecordSize); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("line %d: the bundle goes on after its last record (seq %d)", h.ToSeq-h.FromSeq+3, h.ToSeq)
	}
	root := tree.Root()
	if h.ToSeq == cp.Size {
		if root != cp.Root {
			return nil, fmt.Errorf("%w (%s): a record from seq %d to %d was changed", ErrNotSigned, cp, h.FromSeq, h.ToSeq)
		}
	} else if err := tlog.CheckTree(h.Proof, cp.Size, cp.Root, h.ToSeq, root); err != nil {
		return nil, fmt.Errorf("%w (%s): a record from seq %d to %d, or the bundle's proof, was changed: %v", ErrNotSigned, cp, h.FromSeq, h.ToSeq, err)
	}
	res := &BundleResult{Key: key, Checkpoint: cp, FromSeq: h.FromSeq, ToSeq: h.ToSeq, Root: root}
	if earlier != nil {
		if earlier.Size == cp.Size {
			earlierRoot = cp.Root
		}
		if earlierRoot != earlier.Root {
			return nil, fmt.Errorf("%w: the earlier checkpoint (%s) is not a prefix of this log: at %d records this log's root is %s; the log was forked or rewritten",
				ErrInconsistent, earlier, earlier.Size, earlierRoot)
		}
		res.Earlier = earlier
	}
	return res, nil
}

// readLine reads one '\n'-terminated line of at most max bytes (without
// the newline). io.EOF only at the very end; a last line without a newline
// is an error (a bundle cut short).
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(buf)+len(chunk) > max+1 {
			return nil, fmt.Errorf("line longer than %d bytes", max)
		}
		switch {
		case err == nil:
			if buf == nil {
				return chunk[:len(chunk)-1], nil
			}
			buf = append(buf, chunk...)
			return buf[:len(buf)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			buf = append(buf, chunk...)
		case errors.Is(err, io.EOF):
			if len(buf)+len(chunk) == 0 {
				return nil, io.EOF
			}
			return nil, errors.New("the last line has no newline: the file was cut short")
		default:
			return nil, err
		}
	}
}

// Describe is a one-line summary of a verified bundle, for an auditor.
func (r *BundleResult) Describe() string {
	s := fmt.Sprintf("bundle verified: records seq %d to %d (%d records) are in the log of %d records, checkpoint signed %s by %s",
		r.FromSeq, r.ToSeq, r.ToSeq-r.FromSeq+1, r.Checkpoint.Size, r.Checkpoint.Time.Format(time.RFC3339), r.Checkpoint.Origin)
	s += fmt.Sprintf("; the log's root at seq %d is %s", r.ToSeq, r.Root)
	if r.Earlier != nil {
		s += fmt.Sprintf("; it extends the earlier checkpoint of %d records signed %s", r.Earlier.Size, r.Earlier.Time.Format(time.RFC3339))
	}
	return s
}
