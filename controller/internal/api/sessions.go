package api

import (
	"net/http"
	"strconv"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
)

// Sessions and device revocation. Each takes effect at every gateway with
// the next map push: the device stops being a peer and its open flows are
// cut.

func sessionOut(s store.Session) adminapi.Session {
	return adminapi.Session{
		ID: s.ID, DeviceID: s.DeviceID, User: s.User, Method: s.Method, Source: s.Source,
		StartedAt: s.StartedAt, LastActivity: s.LastActivity, MFAAt: s.MFAAt,
		EndedAt: s.EndedAt, EndReason: s.EndReason, Active: s.Active(),
	}
}

// listSessions serves GET /v1/sessions?user=&device=&all=true (active only
// unless all=true; newest first).
func (a *API) listSessions(w http.ResponseWriter, r *http.Request, _ string) error {
	q := r.URL.Query()
	f := store.SessionFilter{User: q.Get("user"), DeviceID: q.Get("device"), ActiveOnly: true}
	if f.User != "" {
		if err := checkPathName("user", f.User); err != nil {
			return err
		}
	}
	if len(f.DeviceID) > 64 {
		return invalidf("query parameter \"device\": longer than 64 characters")
	}
	if v := q.Get("all"); v != "" {
		all, err := strconv.ParseBool(v)
		if err != nil {
			return invalidf("query parameter \"all\": %q is not true or false", clip(v))
		}
		f.ActiveOnly = !all
	}
	xs, err := a.st.ListSessions(r.Context(), f)
	if err != nil {
		return err
	}
	if a.activity != nil {
		for i := range xs {
			if at, seen := a.activity(xs[i].DeviceID); seen && xs[i].Active() && at.After(xs[i].LastActivity) {
				xs[i].LastActivity = at
			}
		}
	}
	return ok(w, mapSlice(xs, sessionOut))
}

// endSessions serves POST /v1/sessions/end: ends the active sessions the
// body selects (one session, every session of a user, or of a device).
func (a *API) endSessions(w http.ResponseWriter, r *http.Request, actor string) error {
	var req adminapi.EndSessionsRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	set := 0
	for _, v := range []string{req.ID, req.User, req.DeviceID} {
		if v != "" {
			set++
		}
	}
	if set != 1 {
		return invalidf("give exactly one of \"id\", \"user\" or \"device_id\": which sessions to end")
	}
	if req.User != "" {
		if err := checkPathName("user", req.User); err != nil {
			return err
		}
	}
	if len(req.ID) > 64 || len(req.DeviceID) > 64 || len(req.Comment) > 500 {
		return invalidf("\"id\" and \"device_id\" are at most 64 characters, \"comment\" 500")
	}
	ended, err := a.state.EndSessions(r.Context(), origin(r, actor), store.SessionFilter{ID: req.ID, User: req.User, DeviceID: req.DeviceID}, store.EndAdmin, req.Comment)
	if err != nil {
		return err
	}
	return ok(w, mapSlice(ended, sessionOut))
}

// revokeDevice serves POST /v1/devices/{id}/revoke.
func (a *API) revokeDevice(w http.ResponseWriter, r *http.Request, actor string) error {
	id := r.PathValue("id")
	if len(id) > 64 {
		return invalidf("device ID longer than 64 characters")
	}
	d, err := a.state.RevokeDevice(r.Context(), origin(r, actor), id)
	if err != nil {
		return err
	}
	return ok(w, deviceOut(d))
}

// logout serves POST /v1/logout: a device ends its own session, proving
// who it is with its certificate (TLS client authentication; the
// controller's server verifies any certificate a client presents against
// its CA).
func (a *API) logout(w http.ResponseWriter, r *http.Request) error {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized,
			"sign-out needs the device's certificate: run 'cordon logout' on the device")
	}
	id, kind, err := ca.AgentIdentity(r.TLS.VerifiedChains[0][0])
	if err != nil || kind != ca.KindClient {
		return errorf(http.StatusUnauthorized, adminapi.CodeUnauthorized, "only a client device can sign out")
	}
	ended, err := a.state.Logout(r.Context(), id)
	if err != nil {
		return err
	}
	return ok(w, mapSlice(ended, sessionOut))
}
