package adminapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// The verifiable audit log (docs/audit.md). Routes, all needing
// audit.read:
//
//	GET /v1/audit/log?since=N        AuditLogInfo: the key, the latest checkpoint, and the proof from size N
//	GET /v1/audit/verify             AuditVerifyReport: the controller checks its whole stored log
//	GET /v1/audit/export?from=&to=   a bundle (pkg/auditlog), streamed as JSON lines
//	GET /v1/audit/sinks              []AuditSink: each SIEM sink's cursor and lag

// AuditLogInfo is the log's public key and latest signed checkpoint.
type AuditLogInfo struct {
	Key        string `json:"key"`        // note verifier key: name+hash+base64
	Checkpoint string `json:"checkpoint"` // signed checkpoint (C2SP tlog-checkpoint note); empty before the first
	Size       int64  `json:"size"`       // its tree size
	// Since and Proof: the consistency proof from the tree of size Since
	// (the request's since) to Size, when asked for.
	Since int64          `json:"since,omitempty"`
	Proof tlog.TreeProof `json:"proof,omitempty"`
}

// AuditVerifyReport is the controller's check of its whole stored log.
type AuditVerifyReport struct {
	OK          bool   `json:"ok"`
	Records     int64  `json:"records"`
	Checkpoints int    `json:"checkpoints"` // stored checkpoints that verified
	Checkpoint  string `json:"checkpoint"`  // the latest checkpoint the records match; empty if none
	Unsigned    int64  `json:"unsigned"`    // records appended after it (signed within seconds)
	// FirstBad names the first record that is wrong.
	FirstBad *AuditBadRecord `json:"first_bad,omitempty"`
	// Archived are the archived ranges: their bodies are in bundles,
	// their hashes checked here.
	Archived  []AuditArchive `json:"archived,omitempty"`
	Problems  []string       `json:"problems,omitempty"`
	ElapsedMS int64          `json:"elapsed_ms"`
}

// AuditBadRecord is a record and what is wrong with it.
type AuditBadRecord struct {
	Seq    int64  `json:"seq"`
	Reason string `json:"reason"`
}

// AuditLogPath is GET /v1/audit/log, with the proof from size since (0:
// none).
func AuditLogPath(since int64) string {
	if since <= 0 {
		return "/v1/audit/log"
	}
	return "/v1/audit/log?since=" + strconv.FormatInt(since, 10)
}

// AuditExportPath is GET /v1/audit/export of records from seq from (0:
// the first not archived) to seq to (0: the latest checkpoint's size).
func AuditExportPath(from, to int64) string {
	q := url.Values{}
	if from > 0 {
		q.Set("from", strconv.FormatInt(from, 10))
	}
	if to > 0 {
		q.Set("to", strconv.FormatInt(to, 10))
	}
	return "/v1/audit/export?" + q.Encode()
}

// Stream sends a GET and returns the response body for the caller to read
// and close: for answers too large or too slow for Do (an export, a
// verification of millions of records). Only ctx bounds it. A non-2xx
// answer is an *Error, as from Do.
func (c *Client) Stream(ctx context.Context, path string) (io.ReadCloser, error) {
	req, err := c.newRequest(ctx, http.MethodGet, path, nil, "")
	if err != nil {
		return nil, err
	}
	hc := *c.hc
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return nil, c.sendErr(ctx, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, MaxResponseSize))
		return nil, responseError(resp, b)
	}
	return resp.Body, nil
}

// StreamJSON is Stream for a JSON answer of at most MaxResponseSize.
func (c *Client) StreamJSON(ctx context.Context, path string, out any) error {
	body, err := c.Stream(ctx, path)
	if err != nil {
		return err
	}
	defer body.Close()
	if err := json.NewDecoder(io.LimitReader(body, MaxResponseSize)).Decode(out); err != nil {
		return fmt.Errorf("decode GET %s response: %w", path, err)
	}
	return nil
}

// AuditSinksPath is GET /v1/audit/sinks (audit.read): every SIEM sink's
// cursor and lag, as []AuditSink.
const AuditSinksPath = "/v1/audit/sinks"

// AuditSink is one SIEM sink's state (docs/audit.md, "SIEM export").
type AuditSink struct {
	Name       string `json:"name"`
	Format     string `json:"format"`    // syslog or ocsf
	Transport  string `json:"transport"` // tls, tcp or file
	Target     string `json:"target"`    // address or file
	Cursor     int64  `json:"cursor"`    // seq of the last record the sink accepted
	Checkpoint int64  `json:"checkpoint"`
	LogSize    int64  `json:"log_size"`
	Lag        int64  `json:"lag"` // records not yet accepted
	Connected  bool   `json:"connected"`
	// BehindSince: when the sink fell behind (zero while caught up).
	BehindSince time.Time `json:"behind_since,omitzero"`
	Alerting    bool      `json:"alerting"` // an audit.export.lag alert is open
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	LastSent    time.Time `json:"last_sent,omitzero"`
	Sent        int64     `json:"sent"` // records sent since the controller started
}
