package api

import (
	"net/http"
	"strings"
	"unicode"

	"github.com/cordonhq/cordon/pkg/adminapi"
)

// getDevice serves GET /v1/devices/{id}.
func (a *API) getDevice(w http.ResponseWriter, r *http.Request, _ string) error {
	id, err := devicePathID(r)
	if err != nil {
		return err
	}
	d, err := a.st.GetDevice(r.Context(), id)
	if err != nil {
		return err
	}
	return ok(w, deviceOut(d))
}

// quarantineDevice serves POST /v1/devices/{id}/quarantine.
func (a *API) quarantineDevice(w http.ResponseWriter, r *http.Request, actor string) error {
	id, err := devicePathID(r)
	if err != nil {
		return err
	}
	var req adminapi.QuarantineRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	reason := strings.TrimSpace(req.Reason)
	if reason == "" {
		return invalidf("field \"reason\": required: the device's user is told why (e.g. \"malware alert, ticket 4411\")")
	}
	if err := checkText("reason", reason, adminapi.MaxQuarantineReason); err != nil {
		return err
	}
	d, err := a.state.QuarantineDevice(r.Context(), origin(r, actor), id, reason)
	if err != nil {
		return err
	}
	return ok(w, deviceOut(d))
}

// releaseDevice serves POST /v1/devices/{id}/release.
func (a *API) releaseDevice(w http.ResponseWriter, r *http.Request, actor string) error {
	id, err := devicePathID(r)
	if err != nil {
		return err
	}
	var req adminapi.ReleaseRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	comment := strings.TrimSpace(req.Comment)
	if err := checkText("comment", comment, 500); err != nil {
		return err
	}
	d, err := a.state.ReleaseDevice(r.Context(), origin(r, actor), id, comment)
	if err != nil {
		return err
	}
	return ok(w, deviceOut(d))
}

// devicePathID is the device ID of the URL path.
func devicePathID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if len(id) > 64 {
		return "", invalidf("device ID longer than 64 characters")
	}
	return id, nil
}

// checkText validates free text shown to people (a user's terminal, the
// audit trail): one line without control characters, at most max bytes
// (JSON decoding already replaced invalid UTF-8).
func checkText(field, v string, max int) error {
	if len(v) > max {
		return invalidf("field %q: at most %d bytes", field, max)
	}
	if strings.ContainsFunc(v, unicode.IsControl) {
		return invalidf("field %q: control characters (line breaks, tabs, escapes) are not allowed: write it on one line", field)
	}
	return nil
}
