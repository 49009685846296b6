package ledger

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"golang.org/x/mod/sumdb/tlog"
)

// Report is what Verify found.
type Report struct {
	Records     int64      // records in the log
	Checkpoints int        // stored checkpoints checked
	Latest      *Signed    // the latest checkpoint the records match; nil if none
	Unsigned    int64      // records after Latest (signed within an interval)
	FirstBad    *BadRecord // the first record that is wrong; nil if none
	// Archived are the archived ranges (a prefix of the log): their
	// records' bodies are in export bundles, their tree hashes still
	// here and checked against each range's root and the checkpoints.
	Archived []store.AuditArchive
	Problems []string // everything wrong, in the order found (at most maxProblems)
	Elapsed  time.Duration
}

// BadRecord names a record and what is wrong with it.
type BadRecord struct {
	Seq    int64
	Reason string
}

// OK reports a log with nothing wrong.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// maxProblems bounds the report: after the first problems the rest are
// usually their consequences.
const maxProblems = 20

func (r *Report) problem(format string, args ...any) {
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

func (r *Report) bad(seq int64, format string, args ...any) {
	reason := fmt.Sprintf(format, args...)
	if r.FirstBad == nil || seq < r.FirstBad.Seq {
		r.FirstBad = &BadRecord{Seq: seq, Reason: reason}
	}
	r.problem("record seq %d: %s", seq, reason)
}

// Verify checks the whole stored log: every record is where its seq says,
// hashes to the leaf stored when it was appended, and all of them hash to
// every stored checkpoint (each signed with the controller's key) at its
// size. Records appended since the latest checkpoint (Report.Unsigned; Run
// signs them within an interval) are checked against their logged hashes
// only. Verify changes nothing, so what it reports is the stored log as it
// was found. Problems are in the report; the error is for a verification
// that could not run (the store failed).
func (l *Ledger) Verify(ctx context.Context) (*Report, error) {
	start := time.Now()
	rep := &Report{}
	var cps []Signed
	err := l.st.ScanCheckpoints(ctx, func(sc store.Checkpoint) error {
		c, err := auditlog.OpenCheckpoint(sc.Note, l.key.VerifierKey())
		switch {
		case err != nil:
			rep.problem("stored checkpoint of size %d is not a checkpoint signed by this controller's key (%v): it was forged or the database replaced", sc.Size, err)
		case c.Size != sc.Size:
			rep.problem("stored checkpoint of size %d says size %d: the row was edited", sc.Size, c.Size)
		default:
			cps = append(cps, Signed{Checkpoint: c, Note: sc.Note})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	rep.Checkpoints = len(cps)
	n, err := l.st.AuditLogSize(ctx)
	if err != nil {
		return nil, err
	}
	rep.Records = n
	if k := len(cps); k > 0 && cps[k-1].Size > n {
		last := cps[k-1]
		rep.bad(n+1, "missing: the log ends at seq %d but the checkpoint signed %s covers %d records; the records after seq %d were deleted (the tail was truncated)",
			n, last.Time.Format(time.RFC3339), last.Size, n)
	}

	archives, err := l.st.ListAuditArchives(ctx)
	if err != nil {
		return nil, err
	}
	rep.Archived = archives
	archivedTo := checkArchives(rep, archives)

	tree := &auditlog.Tree{}
	var (
		nextArchive = 0 // index into archives of the next range end to compare
		claims      []archiveClaim
		line        []byte
		stored      []tlog.Hash
		next        = 0 // index into cps of the next checkpoint to compare
		badCP       = false
	)
	checkCP := func() {
		for next < len(cps) && cps[next].Size == tree.Size() {
			c := cps[next]
			if tree.Root() == c.Root {
				rep.Latest = &cps[next]
			} else if !badCP {
				badCP = true
				from := int64(1)
				if next > 0 {
					from = cps[next-1].Size + 1
				}
				if rep.FirstBad == nil {
					rep.bad(from, "the records up to seq %d do not hash to the checkpoint signed %s: a record from seq %d to %d was changed, added or removed after it was signed, and its logged hash with it",
						c.Size, c.Time.Format(time.RFC3339), from, c.Size)
				} else {
					rep.problem("the records up to seq %d do not hash to the checkpoint of that size signed %s", c.Size, c.Time.Format(time.RFC3339))
				}
			}
			next++
		}
	}
	err = l.st.ScanAuditLog(ctx, 1, n, func(e store.AuditEvent, leaf tlog.Hash, logged bool) error {
		want := tree.Size() + 1
		if e.Seq != want {
			rep.bad(want, "missing: the next record stored is seq %d; the records between were deleted", e.Seq)
			return errStop
		}
		var h tlog.Hash
		switch {
		case e.Seq <= archivedTo:
			// Archived: the body is in a bundle; the logged leaf stands
			// for it. A changed leaf changes the range's root and every
			// checkpoint's over it.
			if !logged {
				rep.bad(e.Seq, "archived, but its logged hash is gone: it was deleted or changed outside the controller")
			}
			h = leaf
		default:
			line = e.Record().AppendCanonical(line[:0])
			h = tlog.RecordHash(line)
			switch {
			case !logged:
				rep.bad(e.Seq, "not in the log: it has no logged hash, so it was added outside the controller")
			case h != leaf:
				rep.bad(e.Seq, "does not match the hash logged when it was appended: it was edited, or records were reordered")
			}
			if c, ok := claimOf(e); ok {
				claims = append(claims, c)
			}
		}
		stored = tree.Append(h, stored[:0])
		for nextArchive < len(archives) && archives[nextArchive].ToSeq == tree.Size() {
			a := archives[nextArchive]
			if got := tree.Root().String(); got != a.Root {
				rep.bad(a.FromSeq, "the archived records %d to %d do not hash to the root recorded when they were archived (%s; now %s): their logged hashes were changed",
					a.FromSeq, a.ToSeq, a.Root, got)
			}
			nextArchive++
		}
		checkCP()
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, err
	}
	if err == nil { // the scan read every record: the claims are all known
		checkClaims(rep, archives, claims)
	}
	if rep.Latest != nil {
		rep.Unsigned = n - rep.Latest.Size
	} else if n > 0 && rep.OK() {
		rep.problem("no checkpoint covers the log's %d records", n)
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

var errStop = errors.New("stop")

// checkArchives checks that the archived ranges are a prefix of the log,
// each after the one before, and returns its last seq (0: none).
func checkArchives(rep *Report, archives []store.AuditArchive) int64 {
	var to int64
	for _, a := range archives {
		if a.FromSeq != to+1 || a.ToSeq < a.FromSeq {
			rep.bad(to+1, "the archived ranges are not one prefix of the log (a range %d to %d follows one ending at %d): the archive table was edited", a.FromSeq, a.ToSeq, to)
		}
		to = max(to, a.ToSeq)
	}
	return to
}

// archiveClaim is what an audit record of an archive says was archived.
type archiveClaim struct {
	seq      int64
	from, to int64
	root     string
}

// claimOf reads the archive an audit.archive or audit.archive.approve
// success names.
func claimOf(e store.AuditEvent) (archiveClaim, bool) {
	if (e.Type != audit.AuditArchivePastRetention && e.Type != audit.AuditArchiveApprove) || e.Outcome != string(audit.Success) {
		return archiveClaim{}, false
	}
	from, err1 := strconv.ParseInt(e.Details["from_seq"], 10, 64)
	to, err2 := strconv.ParseInt(e.Details["to_seq"], 10, 64)
	if err1 != nil || err2 != nil {
		return archiveClaim{}, false
	}
	return archiveClaim{seq: e.Seq, from: from, to: to, root: e.Details["root"]}, true
}

// checkClaims: every archived range that is not itself inside a later
// archive must be named by the audit record that archived it (in the
// verified part of the log, after the range), with the same bounds and
// root; and every such record must name a range that is archived. So an
// attacker who blanks records and adds a row to the archive table, or
// drops one, is found: the records of archives are in the signed log.
func checkClaims(rep *Report, archives []store.AuditArchive, claims []archiveClaim) {
	bad := rep.bad
	if rep.FirstBad != nil {
		// A record is wrong already (a truncated tail can take the
		// archive's record with it): these are its consequences, or
		// further problems, but not the first bad record.
		bad = func(_ int64, format string, args ...any) { rep.problem(format, args...) }
	}
	var archivedTo int64
	if k := len(archives); k > 0 {
		archivedTo = archives[k-1].ToSeq
	}
	byTo := make(map[int64]archiveClaim, len(claims))
	for _, c := range claims {
		byTo[c.to] = c
	}
	for _, a := range archives {
		c, ok := byTo[a.ToSeq]
		switch {
		case ok && (c.from != a.FromSeq || c.root != a.Root):
			bad(a.FromSeq, "the archived range %d to %d (root %s) is not the one its audit record seq %d names (%d to %d, root %s): the archive table was edited",
				a.FromSeq, a.ToSeq, a.Root, c.seq, c.from, c.to, c.root)
		case ok:
		case a.ToSeq == archivedTo:
			// The latest archive's record comes after its range and is
			// never archived with it.
			bad(a.FromSeq, "the records %d to %d are marked archived, but no audit record of the controller archived them: they were blanked and marked outside the controller", a.FromSeq, a.ToSeq)
		}
		delete(byTo, a.ToSeq)
	}
	for _, c := range byTo {
		bad(c.from, "audit record seq %d says records %d to %d were archived, but the archive table does not list that range: it was edited", c.seq, c.from, c.to)
	}
}

// Export writes a bundle (auditlog.VerifyBundle reads it) of the records
// from seq from (0: the first not archived) to seq to (0: the latest
// checkpoint's size), with the
// latest checkpoint, the hashes before from and the consistency proof from
// to to the checkpoint. It signs any unsigned tail first. An error after
// the first write leaves a bundle that does not verify.
func (l *Ledger) Export(ctx context.Context, w io.Writer, from, to int64) error {
	if _, err := l.Sign(ctx); err != nil && !errors.Is(err, ErrInconsistent) {
		return err
	}
	cp := l.Latest()
	if cp == nil {
		return fmt.Errorf("the audit log has no checkpoint yet: %w", store.ErrNotFound)
	}
	archives, err := l.st.ListAuditArchives(ctx)
	if err != nil {
		return err
	}
	if to == 0 {
		to = cp.Size
	}
	if from == 0 {
		from = 1
		if k := len(archives); k > 0 {
			from = archives[k-1].ToSeq + 1
		}
	}
	if from < 1 || to < from || to > cp.Size {
		return fmt.Errorf("%w: records seq %d to %d: the latest checkpoint covers seq 1 to %d", ErrRange, from, to, cp.Size)
	}
	if k := len(archives); k > 0 && from <= archives[k-1].ToSeq {
		return fmt.Errorf("%w: records seq %d to %d are archived (their bodies are in the bundle written when they were archived): export from seq %d",
			ErrRange, from, archives[k-1].ToSeq, archives[k-1].ToSeq+1)
	}
	prefix, err := l.st.ReadAuditHashes(ctx, auditlog.PrefixIndexes(from-1))
	if err != nil {
		return err
	}
	proof, err := l.Prove(ctx, cp.Size, to)
	if err != nil {
		return err
	}
	buf, err := auditlog.AppendBundleHeader(nil, auditlog.BundleHeader{Key: l.key.VerifierKey(), Checkpoint: string(cp.Note),
		FromSeq: from, ToSeq: to, Prefix: prefix, Proof: proof})
	if err != nil {
		return err
	}
	const flushAt = 256 << 10
	err = l.st.ScanAuditLog(ctx, from, to, func(e store.AuditEvent, _ tlog.Hash, _ bool) error {
		buf = append(e.Record().AppendCanonical(buf), '\n')
		if len(buf) >= flushAt {
			if _, err := w.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("export audit log: %w", err)
	}
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("export audit log: %w", err)
	}
	return nil
}

// ErrRange is wrapped for an export range outside the signed log.
var ErrRange = errors.New("range outside the signed audit log")
