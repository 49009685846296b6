package adminapi

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Audit search and archiving (docs/audit.md). Routes:
//
//	GET  /v1/audit/search?type=&user=&device=&app=&outcome=&since=&until=&cursor=&limit=
//	                                      AuditSearchPage (audit.read)
//	GET  /v1/audit/archives               AuditArchives (audit.read)
//	POST /v1/audit/archive                ArchiveRequestBody -> ArchiveResult (audit.archive)
//	POST /v1/audit/archive/{id}/approve   -> AuditArchive (audit.archive)

// AuditSearch is a search: every non-empty field must match.
type AuditSearch struct {
	Type    string    // exact type, or a prefix ending in "." ("flow.")
	User    string    // exact
	Device  string    // exact
	App     string    // exact
	Outcome string    // exact
	Since   time.Time // zero: no bound
	Until   time.Time // exclusive; zero: no bound
	Cursor  string    // NextCursor of the previous page
	Limit   int       // 1-1000; 0 means 100
}

// AuditSearchPage is one page of a search, newest first by time (then
// seq).
type AuditSearchPage struct {
	Events     []AuditEvent `json:"events"`
	NextCursor string       `json:"next_cursor,omitempty"` // "": no more
}

// AuditSearchPath returns the request path of q.
func AuditSearchPath(q AuditSearch) string {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("type", q.Type)
	set("user", q.User)
	set("device", q.Device)
	set("app", q.App)
	set("outcome", q.Outcome)
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.UTC().Format(time.RFC3339Nano))
	}
	set("cursor", q.Cursor)
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if len(v) == 0 {
		return "/v1/audit/search"
	}
	return "/v1/audit/search?" + v.Encode()
}

// SearchAudit returns one page of a search.
func (c *Client) SearchAudit(ctx context.Context, q AuditSearch) (AuditSearchPage, error) {
	var out AuditSearchPage
	return out, c.Do(ctx, http.MethodGet, AuditSearchPath(q), nil, &out)
}

// ArchiveRequestBody asks to archive the records not archived yet up to
// ToSeq.
type ArchiveRequestBody struct {
	ToSeq        int64  `json:"to_seq"`
	Reason       string `json:"reason"`
	BundleSHA256 string `json:"bundle_sha256"` // of the export bundle of the range, written first
}

// ArchiveRequest is a request waiting for (or used by) a second admin.
type ArchiveRequest struct {
	ID           string     `json:"id"`
	FromSeq      int64      `json:"from_seq"`
	ToSeq        int64      `json:"to_seq"`
	Reason       string     `json:"reason"`
	BundleSHA256 string     `json:"bundle_sha256"`
	RequestedBy  string     `json:"requested_by"`
	CreatedAt    time.Time  `json:"created_at"`
	ExpiresAt    time.Time  `json:"expires_at"`
	ApprovedBy   string     `json:"approved_by,omitempty"`
	ApprovedAt   *time.Time `json:"approved_at,omitempty"`
}

// AuditArchive is an archived range.
type AuditArchive struct {
	FromSeq      int64     `json:"from_seq"`
	ToSeq        int64     `json:"to_seq"`
	Root         string    `json:"root"`
	BundleSHA256 string    `json:"bundle_sha256"`
	Reason       string    `json:"reason"`
	Request      string    `json:"request,omitempty"`
	RequestedBy  string    `json:"requested_by"`
	ApprovedBy   string    `json:"approved_by,omitempty"`
	At           time.Time `json:"at"`
}

// ArchiveResult is what an archive request did: a request waiting for
// approval, or (records past their retention end) the archive.
type ArchiveResult struct {
	Request      *ArchiveRequest `json:"request,omitempty"`
	Archive      *AuditArchive   `json:"archive,omitempty"`
	RetentionEnd time.Time       `json:"retention_end"` // of the newest record of the range
}

// AuditArchives lists archived ranges and archive requests.
type AuditArchives struct {
	RetentionYears int              `json:"retention_years"`
	Archived       []AuditArchive   `json:"archived"`
	Requests       []ArchiveRequest `json:"requests"`
}

// RequestArchive asks to archive records (POST /v1/audit/archive).
func (c *Client) RequestArchive(ctx context.Context, body ArchiveRequestBody) (ArchiveResult, error) {
	var out ArchiveResult
	return out, c.Do(ctx, http.MethodPost, "/v1/audit/archive", body, &out)
}

// ApproveArchive approves request id and archives its range.
func (c *Client) ApproveArchive(ctx context.Context, id string) (AuditArchive, error) {
	var out AuditArchive
	return out, c.Do(ctx, http.MethodPost, "/v1/audit/archive/"+url.PathEscape(id)+"/approve", nil, &out)
}

// ListArchives returns the archived ranges and the requests.
func (c *Client) ListArchives(ctx context.Context) (AuditArchives, error) {
	var out AuditArchives
	return out, c.Do(ctx, http.MethodGet, "/v1/audit/archives", nil, &out)
}
