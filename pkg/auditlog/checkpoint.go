package auditlog

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint is a signed statement of the log's state: its size, its root
// hash and when the controller signed it.
type Checkpoint struct {
	Origin string // the log's name; also the signing key's name
	Size   int64
	Root   tlog.Hash
	Time   time.Time // UTC, microseconds
}

// MaxCheckpointSize bounds a signed checkpoint, checked before it is
// parsed.
const MaxCheckpointSize = 4 << 10

// SeedSize is the size of the signing key's seed (an Ed25519 seed).
const SeedSize = ed25519.SeedSize

// timePrefix starts the checkpoint's extension line that carries its time.
const timePrefix = "time "

// Body is the checkpoint's text as signed (C2SP tlog-checkpoint): the
// origin, the size in decimal, the root hash in base64, then one extension
// line "time 2026-12-03T15:04:05.123456Z".
func (c Checkpoint) Body() string {
	return fmt.Sprintf("%s\n%d\n%s\n%s%s\n", c.Origin, c.Size, c.Root, timePrefix, c.Time.UTC().Format(TimeLayout))
}

// String is one line for people: "tree size 12345, root 3q2+..., signed 2026-...".
func (c Checkpoint) String() string {
	return fmt.Sprintf("tree size %d, root %s, signed %s by %s", c.Size, c.Root, c.Time.UTC().Format(time.RFC3339), c.Origin)
}

// Key is the log's signing key.
type Key struct {
	signer note.Signer
	vkey   string
}

// NewKey derives the log's key from a SeedSize-byte seed. The key's name,
// which is the log's origin, is "cordon-audit/" and the first 16 hex
// digits of the SHA-256 of the public key: the same key always names the
// same log.
func NewKey(seed []byte) (*Key, error) {
	if len(seed) != SeedSize {
		return nil, fmt.Errorf("audit log key seed is %d bytes, want %d", len(seed), SeedSize)
	}
	pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
	sum := sha256.Sum256(pub)
	name := "cordon-audit/" + hex.EncodeToString(sum[:8])
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		return nil, fmt.Errorf("audit log key: %w", err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("audit log key: %w", err)
	}
	// The note package makes signers only from its encoded form.
	skey := fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", name, v.KeyHash(), base64.StdEncoding.EncodeToString(append([]byte{1}, seed...)))
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, fmt.Errorf("audit log key: %w", err)
	}
	return &Key{signer: s, vkey: vkey}, nil
}

// Origin is the log's name.
func (k *Key) Origin() string { return k.signer.Name() }

// VerifierKey is the public key in note's encoding ("name+hash+base64"),
// what auditors and gateways verify checkpoints with.
func (k *Key) VerifierKey() string { return k.vkey }

// Sign returns the signed checkpoint of a tree of size n with root h at t.
func (k *Key) Sign(n int64, h tlog.Hash, t time.Time) (Checkpoint, []byte, error) {
	c := Checkpoint{Origin: k.Origin(), Size: n, Root: h, Time: t.UTC().Truncate(time.Microsecond)}
	msg, err := note.Sign(&note.Note{Text: c.Body()}, k.signer)
	if err != nil {
		return Checkpoint{}, nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	return c, msg, nil
}

// ErrBadSignature is returned by [OpenCheckpoint] for a checkpoint that is
// not signed by the key it is checked with.
var ErrBadSignature = errors.New("checkpoint is not signed by the audit log's key")

// OpenCheckpoint checks that msg is a checkpoint signed by the key vkey (in
// note's encoding) and returns it. Any other text, signer or format is an
// error.
func OpenCheckpoint(msg []byte, vkey string) (Checkpoint, error) {
	if len(msg) > MaxCheckpointSize {
		return Checkpoint{}, fmt.Errorf("checkpoint of %d bytes is larger than %d", len(msg), MaxCheckpointSize)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("audit log key %q: %w", clip(vkey), err)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		if errors.As(err, &unverified) || errors.As(err, &invalid) {
			return Checkpoint{}, fmt.Errorf("%w (%s)", ErrBadSignature, v.Name())
		}
		return Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	c, err := ParseCheckpointBody(n.Text)
	if err != nil {
		return Checkpoint{}, err
	}
	if c.Origin != v.Name() {
		return Checkpoint{}, fmt.Errorf("checkpoint names log %q but is signed by the key of %q", clip(c.Origin), v.Name())
	}
	return c, nil
}

// ParseCheckpointBody parses a checkpoint's text (without checking any
// signature): exactly the four lines Body writes.
func ParseCheckpointBody(text string) (Checkpoint, error) {
	lines := strings.SplitAfter(text, "\n")
	if len(lines) != 5 || lines[4] != "" {
		return Checkpoint{}, errors.New("checkpoint text must be 4 lines: origin, size, root hash, time")
	}
	for i := range 4 {
		lines[i] = strings.TrimSuffix(lines[i], "\n")
	}
	var c Checkpoint
	c.Origin = lines[0]
	if c.Origin == "" {
		return Checkpoint{}, errors.New("checkpoint has an empty origin line")
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != lines[1] {
		return Checkpoint{}, fmt.Errorf("checkpoint size %q is not a decimal number", clip(lines[1]))
	}
	c.Size = n
	if c.Root, err = tlog.ParseHash(lines[2]); err != nil || c.Root.String() != lines[2] {
		return Checkpoint{}, fmt.Errorf("checkpoint root hash %q is not 32 bytes of base64", clip(lines[2]))
	}
	ts, ok := strings.CutPrefix(lines[3], timePrefix)
	if !ok {
		return Checkpoint{}, fmt.Errorf("checkpoint's fourth line %q is not %q and a time", clip(lines[3]), timePrefix)
	}
	if c.Time, err = time.Parse(TimeLayout, ts); err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint time %q: want %s", clip(ts), TimeLayout)
	}
	return c, nil
}

// Consistent checks that the tree of checkpoint newer contains the tree of
// older as a prefix, with the consistency proof p (tlog.ProveTree(newer.Size,
// older.Size)). Equal sizes need equal roots and no proof; a smaller newer
// tree is a log that was rolled back or truncated.
func Consistent(older, newer Checkpoint, p tlog.TreeProof) error {
	switch {
	case newer.Size < older.Size:
		return fmt.Errorf("%w: the log shrank from %d records (checkpoint signed %s) to %d (signed %s): it was truncated or rolled back",
			ErrInconsistent, older.Size, older.Time.Format(time.RFC3339), newer.Size, newer.Time.Format(time.RFC3339))
	case older.Size == 0:
		return nil
	case newer.Size == older.Size:
		if newer.Root != older.Root {
			return fmt.Errorf("%w: two checkpoints of size %d have different roots (signed %s and %s): the log was forked or rewritten",
				ErrInconsistent, older.Size, older.Time.Format(time.RFC3339), newer.Time.Format(time.RFC3339))
		}
		return nil
	}
	if err := tlog.CheckTree(p, newer.Size, newer.Root, older.Size, older.Root); err != nil {
		return fmt.Errorf("%w: the log of %d records (signed %s) does not extend the one of %d records (signed %s): it was forked or rewritten (%v)",
			ErrInconsistent, newer.Size, newer.Time.Format(time.RFC3339), older.Size, older.Time.Format(time.RFC3339), err)
	}
	return nil
}

// ErrInconsistent is wrapped by every error of [Consistent]: two
// checkpoints that cannot both be true of one append-only log.
var ErrInconsistent = errors.New("audit log checkpoints are inconsistent")

// clip shortens untrusted text for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
