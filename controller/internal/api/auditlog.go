package api

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/pkg/adminapi"
)

// The verifiable audit log (the routes are listed in
// pkg/adminapi/auditlog.go). Verification of a bundle happens in
// cordonctl, not here: a controller should not be the one to vouch for
// its own log.

func (a *API) needLedger() error {
	if a.ledger == nil {
		return errorf(http.StatusServiceUnavailable, adminapi.CodeInternal, "this controller keeps no verifiable audit log")
	}
	return nil
}

// int64Param parses query parameter name (absent: 0).
func int64Param(r *http.Request, name string, least int64) (int64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < least {
		return 0, invalidf("parameter %q: %q: want a whole number from %d", name, clip(s), least)
	}
	return n, nil
}

func (a *API) auditLogInfo(w http.ResponseWriter, r *http.Request, _ string) error {
	if err := a.needLedger(); err != nil {
		return err
	}
	since, err := int64Param(r, "since", 0)
	if err != nil {
		return err
	}
	info := adminapi.AuditLogInfo{Key: a.ledger.Key().VerifierKey()}
	cp := a.ledger.Latest()
	if cp == nil {
		if since > 0 {
			return notFoundf("the audit log has no checkpoint yet; try again in a few seconds")
		}
		return ok(w, info)
	}
	info.Checkpoint, info.Size = string(cp.Note), cp.Size
	if since > 0 {
		if since > cp.Size {
			return conflictf("the latest checkpoint covers %d records, fewer than %d: the log was truncated or rolled back, or the checkpoint is of another log", cp.Size, since)
		}
		if info.Proof, err = a.ledger.Prove(r.Context(), cp.Size, since); err != nil {
			return err
		}
		info.Since = since
	}
	return ok(w, info)
}

func (a *API) auditVerify(w http.ResponseWriter, r *http.Request, _ string) error {
	if err := a.needLedger(); err != nil {
		return err
	}
	rep, err := a.ledger.Verify(r.Context())
	if err != nil {
		return err
	}
	out := adminapi.AuditVerifyReport{OK: rep.OK(), Records: rep.Records, Checkpoints: rep.Checkpoints, Unsigned: rep.Unsigned,
		Problems: rep.Problems, ElapsedMS: rep.Elapsed.Milliseconds()}
	if rep.Latest != nil {
		out.Checkpoint = string(rep.Latest.Note)
	}
	for _, x := range rep.Archived {
		out.Archived = append(out.Archived, adminapi.AuditArchive(x))
	}
	if rep.FirstBad != nil {
		out.FirstBad = &adminapi.AuditBadRecord{Seq: rep.FirstBad.Seq, Reason: rep.FirstBad.Reason}
	}
	return ok(w, out)
}

func (a *API) auditExport(w http.ResponseWriter, r *http.Request, _ string) error {
	if err := a.needLedger(); err != nil {
		return err
	}
	from, err := int64Param(r, "from", 1) // absent: 0, the first record not archived
	if err != nil {
		return err
	}
	to, err := int64Param(r, "to", 1)
	if err != nil {
		return err
	}
	// Headers go out with the first write: until then an error is still
	// an error answer.
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	sw := &startedWriter{w: w}
	err = a.ledger.Export(r.Context(), sw, from, to)
	switch {
	case err == nil:
		return nil
	case sw.started:
		// Too late for an error answer: the bundle is cut short, and
		// cut short it does not verify.
		a.log.ErrorContext(r.Context(), "audit export failed after it began", logErr, err)
		return nil
	case errors.Is(err, ledger.ErrRange):
		return invalidf("%v", err)
	}
	return err
}

// startedWriter notes whether anything was written.
type startedWriter struct {
	w       http.ResponseWriter
	started bool
}

func (s *startedWriter) Write(b []byte) (int, error) {
	s.started = true
	return s.w.Write(b)
}
