package api

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
)

// Audit search and archiving (routes in pkg/adminapi/auditsearch.go).

// maxSearchParam bounds every search parameter.
const maxSearchParam = 200

func (a *API) searchAudit(w http.ResponseWriter, r *http.Request, _ string) error {
	v := r.URL.Query()
	q := store.AuditQuery{Type: v.Get("type"), User: v.Get("user"), Device: v.Get("device"), App: v.Get("app"),
		Outcome: v.Get("outcome"), Cursor: v.Get("cursor")}
	for name, s := range map[string]string{"type": q.Type, "user": q.User, "device": q.Device, "app": q.App, "outcome": q.Outcome, "cursor": q.Cursor} {
		if len(s) > maxSearchParam {
			return invalidf("parameter %q: longer than %d bytes", name, maxSearchParam)
		}
	}
	for name, t := range map[string]*time.Time{"since": &q.Since, "until": &q.Until} {
		s := v.Get(name)
		if s == "" {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return invalidf("parameter %q: %q is not an RFC 3339 time (2026-12-01T00:00:00Z)", name, clip(s))
		}
		*t = at
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until) {
		return invalidf("since (%s) must be before until (%s)", q.Since.Format(time.RFC3339), q.Until.Format(time.RFC3339))
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > store.MaxAuditSearchLimit {
			return invalidf("parameter \"limit\": %q: want a number from 1 to %d", clip(s), store.MaxAuditSearchLimit)
		}
		q.Limit = n
	}
	p, err := a.st.SearchAudit(r.Context(), q)
	if errors.Is(err, store.ErrBadCursor) {
		return invalidf("%v", err)
	} else if err != nil {
		return err
	}
	return ok(w, adminapi.AuditSearchPage{NextCursor: p.NextCursor,
		Events: mapSlice(p.Events, func(e store.AuditEvent) adminapi.AuditEvent { return adminapi.AuditEvent(e) })})
}

// archivingAdmin is who the two-admin rule counts: the account the token
// acts for, or the token's name when it has none. Two tokens of one
// account are one admin.
func archivingAdmin(r *http.Request) string {
	t := principalFrom(r.Context()).token
	if t.Account != "" {
		return "account:" + t.Account
	}
	return "token:" + t.Name
}

func (a *API) requestArchive(w http.ResponseWriter, r *http.Request, actor string) error {
	var body adminapi.ArchiveRequestBody
	if err := decode(w, r, &body); err != nil {
		return err
	}
	res, err := a.state.RequestArchive(r.Context(), origin(r, actor), archivingAdmin(r),
		state.ArchiveAsk{ToSeq: body.ToSeq, Reason: body.Reason, BundleSHA256: body.BundleSHA256})
	if err != nil {
		return err
	}
	out := adminapi.ArchiveResult{RetentionEnd: res.RetentionEnd}
	if res.Request != nil {
		r := adminapi.ArchiveRequest(*res.Request)
		out.Request = &r
	}
	if res.Archive != nil {
		a := adminapi.AuditArchive(*res.Archive)
		out.Archive = &a
	}
	return ok(w, out)
}

func (a *API) approveArchive(w http.ResponseWriter, r *http.Request, actor string) error {
	id := r.PathValue("id")
	if len(id) > 64 {
		return invalidf("archive request ID longer than 64 characters")
	}
	arch, err := a.state.ApproveArchive(r.Context(), origin(r, actor), archivingAdmin(r), id)
	if err != nil {
		return err
	}
	return ok(w, adminapi.AuditArchive(arch))
}

func (a *API) listArchives(w http.ResponseWriter, r *http.Request, _ string) error {
	archived, err := a.st.ListAuditArchives(r.Context())
	if err != nil {
		return err
	}
	reqs, err := a.st.ListArchiveRequests(r.Context())
	if err != nil {
		return err
	}
	return ok(w, adminapi.AuditArchives{RetentionYears: a.state.RetentionYears(),
		Archived: mapSlice(archived, func(x store.AuditArchive) adminapi.AuditArchive { return adminapi.AuditArchive(x) }),
		Requests: mapSlice(reqs, func(x store.ArchiveRequest) adminapi.ArchiveRequest { return adminapi.ArchiveRequest(x) })})
}
