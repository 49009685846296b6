package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/audit"
)

// Segments.

func segmentOut(s store.Segment) adminapi.Segment {
	return adminapi.Segment{Name: s.Name, CIDRs: nonNil(s.CIDRs), CreatedAt: s.CreatedAt}
}

func (a *API) createSegment(w http.ResponseWriter, r *http.Request, actor string) error {
	var req adminapi.CreateSegmentRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	seg, err := parseSegment(&req)
	if err != nil {
		return err
	}
	seg.CreatedAt = a.stamp()
	if err := a.st.CreateSegment(r.Context(), seg); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return conflictf("segment %q already exists", seg.Name)
		}
		return err
	}
	a.mutated(r, actor, audit.AdminSegmentCreate, seg.Name, nil, true)
	return created(w, segmentOut(seg))
}

func (a *API) listSegments(w http.ResponseWriter, r *http.Request, _ string) error {
	ss, err := a.st.ListSegments(r.Context())
	if err != nil {
		return err
	}
	return ok(w, mapSlice(ss, segmentOut))
}

func (a *API) getSegment(w http.ResponseWriter, r *http.Request, _ string) error {
	name := r.PathValue("name")
	if err := checkPathName("segment", name); err != nil {
		return err
	}
	s, err := a.st.GetSegment(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return notFoundf("segment %q not found", name)
	}
	if err != nil {
		return err
	}
	return ok(w, segmentOut(s))
}

func (a *API) deleteSegment(w http.ResponseWriter, r *http.Request, actor string) error {
	name := r.PathValue("name")
	if err := checkPathName("segment", name); err != nil {
		return err
	}
	switch err := a.st.DeleteSegment(r.Context(), name); {
	case errors.Is(err, store.ErrNotFound):
		return notFoundf("segment %q not found", name)
	case errors.Is(err, store.ErrInUse):
		return inUsef("segment %q is still used by apps or gateways: delete those first", name)
	case err != nil:
		return err
	}
	a.mutated(r, actor, audit.AdminSegmentDelete, name, nil, true)
	return noContent(w)
}

// Apps.

func appOut(x store.App) adminapi.App {
	ports := make([]string, len(x.Ports))
	for i, p := range x.Ports {
		ports[i] = p.String()
	}
	return adminapi.App{
		Name: x.Name, Segment: x.Segment, DNSName: x.DNSName, Address: x.Addr,
		Proto: x.Proto, Ports: ports, Classification: string(x.Classification), CreatedAt: x.CreatedAt,
	}
}

func (a *API) createApp(w http.ResponseWriter, r *http.Request, actor string) error {
	var req adminapi.CreateAppRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	app, err := parseApp(&req)
	if err != nil {
		return err
	}
	ctx := r.Context()
	seg, err := a.st.GetSegment(ctx, app.Segment)
	if errors.Is(err, store.ErrNotFound) {
		return notFoundf("segment %q not found: create it first (cordonctl segment create)", app.Segment)
	}
	if err != nil {
		return err
	}
	if err := appInSegment(app, seg); err != nil {
		return err
	}
	// Two apps answering to one name would make DNS ambiguous.
	apps, err := a.st.ListApps(ctx)
	if err != nil {
		return err
	}
	for _, o := range apps {
		if o.DNSName == app.DNSName && o.Name != app.Name {
			return conflictf("dns_name %q is already used by app %q", app.DNSName, o.Name)
		}
	}
	app.CreatedAt = a.stamp()
	switch err := a.st.CreateApp(ctx, app); {
	case errors.Is(err, store.ErrAlreadyExists):
		return conflictf("app %q already exists", app.Name)
	case errors.Is(err, store.ErrNotFound):
		return notFoundf("segment %q not found: create it first (cordonctl segment create)", app.Segment)
	case err != nil:
		return err
	}
	a.mutated(r, actor, audit.AdminAppCreate, app.Name, map[string]string{"segment": app.Segment, "classification": string(app.Classification)}, true)
	return created(w, appOut(app))
}

func (a *API) listApps(w http.ResponseWriter, r *http.Request, _ string) error {
	xs, err := a.st.ListApps(r.Context())
	if err != nil {
		return err
	}
	return ok(w, mapSlice(xs, appOut))
}

func (a *API) getApp(w http.ResponseWriter, r *http.Request, _ string) error {
	name := r.PathValue("name")
	if err := checkPathName("app", name); err != nil {
		return err
	}
	x, err := a.st.GetApp(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return notFoundf("app %q not found", name)
	}
	if err != nil {
		return err
	}
	return ok(w, appOut(x))
}

func (a *API) deleteApp(w http.ResponseWriter, r *http.Request, actor string) error {
	name := r.PathValue("name")
	if err := checkPathName("app", name); err != nil {
		return err
	}
	switch err := a.st.DeleteApp(r.Context(), name); {
	case errors.Is(err, store.ErrNotFound):
		return notFoundf("app %q not found", name)
	case errors.Is(err, store.ErrInUse):
		return inUsef("app %q is still used by rules: delete those first", name)
	case err != nil:
		return err
	}
	a.mutated(r, actor, audit.AdminAppDelete, name, nil, true)
	return noContent(w)
}

// Users.

func userOut(u store.User) adminapi.User {
	return adminapi.User{Name: u.Name, Disabled: u.Disabled, CreatedAt: u.CreatedAt}
}

func (a *API) createUser(w http.ResponseWriter, r *http.Request, actor string) error {
	var req adminapi.CreateUserRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkName("name", req.Name); err != nil {
		return err
	}
	if req.Password == "" {
		return invalidf("field \"password\": required")
	}
	if err := auth.CheckPasswordPolicy(req.Password); err != nil {
		return invalidf("field \"password\": %v", err)
	}
	hash, err := a.pw.Hash(req.Password)
	if err != nil {
		return err
	}
	secret, uri, err := auth.NewTOTPSecret(req.Name)
	if err != nil {
		return err
	}
	u := store.User{Name: req.Name, PasswordHash: hash, TOTPSecret: secret, CreatedAt: a.stamp()}
	if err := a.st.CreateUser(r.Context(), u); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return conflictf("user %q already exists", u.Name)
		}
		return err
	}
	codes, err := a.newRecoveryCodes(r.Context(), u.Name)
	if err != nil {
		// Do not leave a user without recovery codes behind.
		if derr := a.st.DeleteUser(context.WithoutCancel(r.Context()), u.Name); derr != nil {
			a.log.ErrorContext(r.Context(), "remove half-created user", logErr, derr)
		}
		return fmt.Errorf("store recovery codes of user %s: %w", u.Name, err)
	}
	// A new user has no devices yet: no network map changes.
	a.mutated(r, actor, audit.AdminUserCreate, u.Name, map[string]string{"recovery_codes": strconv.Itoa(len(codes))}, false)
	return created(w, adminapi.CreateUserResponse{User: userOut(u), TOTPSecret: secret, TOTPURI: uri, RecoveryCodes: codes})
}

func (a *API) listUsers(w http.ResponseWriter, r *http.Request, _ string) error {
	xs, err := a.st.ListUsers(r.Context())
	if err != nil {
		return err
	}
	return ok(w, mapSlice(xs, userOut))
}

func (a *API) getUser(w http.ResponseWriter, r *http.Request, _ string) error {
	name := r.PathValue("name")
	if err := checkPathName("user", name); err != nil {
		return err
	}
	u, err := a.st.GetUser(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return notFoundf("user %q not found", name)
	}
	if err != nil {
		return err
	}
	out := userOut(u)
	ids, err := a.identities(r.Context(), u.Name)
	if err != nil {
		return err
	}
	out.Identities = ids
	return ok(w, out)
}

// identities are the OIDC links of user (every user's when user is ""),
// with the age of their claims by the controller's clock.
func (a *API) identities(ctx context.Context, user string) ([]adminapi.UserIdentity, error) {
	ids, err := a.st.ListIdentities(ctx)
	if err != nil {
		return nil, fmt.Errorf("list identities: %w", err)
	}
	now := a.now()
	var out []adminapi.UserIdentity
	for _, id := range ids {
		if user != "" && id.User != user {
			continue
		}
		asOf := id.LastRefresh
		if asOf.IsZero() {
			asOf = id.CreatedAt
		}
		out = append(out, adminapi.UserIdentity{
			User: id.User, IdP: id.IdP, Subject: id.Subject, Email: id.Email, Claim: id.Claim, Groups: nonNil(id.Groups),
			ClaimsAsOf: asOf, ClaimsAge: int64(max(now.Sub(asOf), 0) / time.Second), InvalidAt: id.InvalidAt,
		})
	}
	return out, nil
}

func (a *API) listIdentities(w http.ResponseWriter, r *http.Request, _ string) error {
	out, err := a.identities(r.Context(), "")
	if err != nil {
		return err
	}
	return ok(w, nonNil(out))
}

// setUserDisabled returns the handler of POST /v1/users/{name}/disable or
// /enable. Disabling takes the user's devices off every gateway with the
// next map push (their open flows are cut) and refuses new sign-ins;
// devices and memberships stay, so enabling restores access.
func (a *API) setUserDisabled(disabled bool) adminHandlerFunc {
	typ := audit.AdminUserEnable
	if disabled {
		typ = audit.AdminUserDisable
	}
	return func(w http.ResponseWriter, r *http.Request, actor string) error {
		name := r.PathValue("name")
		if err := checkPathName("user", name); err != nil {
			return err
		}
		// Disabling ends the user's sessions in the same transaction;
		// enabling does not bring them back: the user signs in again.
		ended, err := a.st.SetUserDisabled(r.Context(), name, disabled, a.stamp())
		switch {
		case errors.Is(err, store.ErrNotFound):
			return notFoundf("user %q not found", name)
		case err != nil:
			return err
		}
		a.mutated(r, actor, typ, name, nil, false)
		a.auditSessionsEnded(r.Context(), actor, ended, "")
		a.changed()
		u, err := a.st.GetUser(r.Context(), name)
		if err != nil {
			return err
		}
		return ok(w, userOut(u))
	}
}

func (a *API) deleteUser(w http.ResponseWriter, r *http.Request, actor string) error {
	name := r.PathValue("name")
	if err := checkPathName("user", name); err != nil {
		return err
	}
	switch err := a.st.DeleteUser(r.Context(), name); {
	case errors.Is(err, store.ErrNotFound):
		return notFoundf("user %q not found", name)
	case err != nil:
		return err
	}
	a.mutated(r, actor, audit.AdminUserDelete, name, nil, true)
	return noContent(w)
}

// Groups.

func groupOut(g store.Group) adminapi.Group {
	return adminapi.Group{Name: g.Name, Members: nonNil(g.Members), CreatedAt: g.CreatedAt}
}

func (a *API) createGroup(w http.ResponseWriter, r *http.Request, actor string) error {
	var req adminapi.CreateGroupRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkName("name", req.Name); err != nil {
		return err
	}
	g := store.Group{Name: req.Name, CreatedAt: a.stamp()}
	if err := a.st.CreateGroup(r.Context(), g); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return conflictf("group %q already exists", g.Name)
		}
		return err
	}
	a.mutated(r, actor, audit.AdminGroupCreate, g.Name, nil, false)
	return created(w, groupOut(g))
}

func (a *API) listGroups(w http.ResponseWriter, r *http.Request, _ string) error {
	xs, err := a.st.ListGroups(r.Context())
	if err != nil {
		return err
	}
	return ok(w, mapSlice(xs, groupOut))
}

func (a *API) getGroup(w http.ResponseWriter, r *http.Request, _ string) error {
	name := r.PathValue("name")
	if err := checkPathName("group", name); err != nil {
		return err
	}
	g, err := a.st.GetGroup(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return notFoundf("group %q not found", name)
	}
	if err != nil {
		return err
	}
	return ok(w, groupOut(g))
}

func (a *API) deleteGroup(w http.ResponseWriter, r *http.Request, actor string) error {
	name := r.PathValue("name")
	if err := checkPathName("group", name); err != nil {
		return err
	}
	switch err := a.st.DeleteGroup(r.Context(), name); {
	case errors.Is(err, store.ErrNotFound):
		return notFoundf("group %q not found", name)
	case errors.Is(err, store.ErrInUse):
		return inUsef("group %q is still used by rules: delete those first", name)
	case err != nil:
		return err
	}
	a.mutated(r, actor, audit.AdminGroupDelete, name, nil, true)
	return noContent(w)
}

func (a *API) addMember(w http.ResponseWriter, r *http.Request, actor string) error {
	group := r.PathValue("name")
	if err := checkPathName("group", group); err != nil {
		return err
	}
	var req adminapi.AddMemberRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkName("user", req.User); err != nil {
		return err
	}
	ctx := r.Context()
	// Look both up first so the error can say which one is missing.
	if _, err := a.st.GetGroup(ctx, group); errors.Is(err, store.ErrNotFound) {
		return notFoundf("group %q not found", group)
	} else if err != nil {
		return err
	}
	if _, err := a.st.GetUser(ctx, req.User); errors.Is(err, store.ErrNotFound) {
		return notFoundf("user %q not found", req.User)
	} else if err != nil {
		return err
	}
	switch err := a.st.AddMember(ctx, group, req.User); {
	case errors.Is(err, store.ErrAlreadyExists):
		return conflictf("user %q is already a member of group %q", req.User, group)
	case errors.Is(err, store.ErrNotFound):
		return notFoundf("group %q or user %q not found", group, req.User)
	case err != nil:
		return err
	}
	g, err := a.st.GetGroup(ctx, group)
	if err != nil {
		return err
	}
	a.mutated(r, actor, audit.AdminGroupAddMember, group, map[string]string{"user": req.User}, true)
	return ok(w, groupOut(g))
}

func (a *API) removeMember(w http.ResponseWriter, r *http.Request, actor string) error {
	group, user := r.PathValue("name"), r.PathValue("user")
	if err := checkPathName("group", group); err != nil {
		return err
	}
	if err := checkPathName("member", user); err != nil {
		return err
	}
	switch err := a.st.RemoveMember(r.Context(), group, user); {
	case errors.Is(err, store.ErrNotFound):
		return notFoundf("user %q is not a member of group %q (or the group does not exist)", user, group)
	case err != nil:
		return err
	}
	a.mutated(r, actor, audit.AdminGroupRemoveMember, group, map[string]string{"user": user}, true)
	return noContent(w)
}

// Rules.

func ruleOut(x store.Rule) adminapi.Rule {
	return adminapi.Rule{Name: x.Name, Group: x.Group, App: x.App, CreatedAt: x.CreatedAt}
}

func (a *API) createRule(w http.ResponseWriter, r *http.Request, actor string) error {
	var req adminapi.CreateRuleRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	for _, f := range [][2]string{{"name", req.Name}, {"group", req.Group}, {"app", req.App}} {
		if err := checkName(f[0], f[1]); err != nil {
			return err
		}
	}
	ctx := r.Context()
	if _, err := a.st.GetGroup(ctx, req.Group); errors.Is(err, store.ErrNotFound) {
		return notFoundf("group %q not found", req.Group)
	} else if err != nil {
		return err
	}
	if _, err := a.st.GetApp(ctx, req.App); errors.Is(err, store.ErrNotFound) {
		return notFoundf("app %q not found", req.App)
	} else if err != nil {
		return err
	}
	rule := store.Rule{Name: req.Name, Group: req.Group, App: req.App, CreatedAt: a.stamp()}
	switch err := a.st.CreateRule(ctx, rule); {
	case errors.Is(err, store.ErrAlreadyExists):
		return conflictf("rule %q already exists", rule.Name)
	case errors.Is(err, store.ErrNotFound):
		return notFoundf("group %q or app %q not found", rule.Group, rule.App)
	case err != nil:
		return err
	}
	a.mutated(r, actor, audit.AdminRuleCreate, rule.Name, map[string]string{"group": rule.Group, "app": rule.App}, true)
	return created(w, ruleOut(rule))
}

func (a *API) listRules(w http.ResponseWriter, r *http.Request, _ string) error {
	xs, err := a.st.ListRules(r.Context())
	if err != nil {
		return err
	}
	return ok(w, mapSlice(xs, ruleOut))
}

func (a *API) getRule(w http.ResponseWriter, r *http.Request, _ string) error {
	name := r.PathValue("name")
	if err := checkPathName("rule", name); err != nil {
		return err
	}
	x, err := a.st.GetRule(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return notFoundf("rule %q not found", name)
	}
	if err != nil {
		return err
	}
	return ok(w, ruleOut(x))
}

func (a *API) deleteRule(w http.ResponseWriter, r *http.Request, actor string) error {
	name := r.PathValue("name")
	if err := checkPathName("rule", name); err != nil {
		return err
	}
	switch err := a.st.DeleteRule(r.Context(), name); {
	case errors.Is(err, store.ErrNotFound):
		return notFoundf("rule %q not found", name)
	case err != nil:
		return err
	}
	a.mutated(r, actor, audit.AdminRuleDelete, name, nil, true)
	return noContent(w)
}

// Gateway enrollment tokens, gateways, devices.

func tokenOut(t store.EnrollToken) adminapi.GatewayToken {
	return adminapi.GatewayToken{
		ID: t.ID, Segment: t.Segment, Name: t.Name, CreatedAt: t.CreatedAt,
		ExpiresAt: t.ExpiresAt, UsedAt: t.UsedAt, UsedBy: t.UsedBy,
	}
}

func (a *API) createGatewayToken(w http.ResponseWriter, r *http.Request, actor string) error {
	var req adminapi.CreateGatewayTokenRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if err := checkName("segment", req.Segment); err != nil {
		return err
	}
	if req.Name != "" {
		if err := checkName("name", req.Name); err != nil {
			return err
		}
	}
	ttl, err := parseTTL(req.TTL)
	if err != nil {
		return err
	}
	ctx := r.Context()
	if err := a.resolveTokenSegment(ctx, req.Segment); err != nil {
		return err
	}
	secret, hash := auth.NewEnrollToken()
	now := a.stamp()
	t := store.EnrollToken{
		ID: newID("gwt-"), Hash: hash, Segment: req.Segment, Name: req.Name,
		CreatedAt: now, ExpiresAt: now.Add(ttl),
	}
	switch err := a.st.CreateEnrollToken(ctx, t); {
	case errors.Is(err, store.ErrNotFound):
		return notFoundf("segment %q not found", req.Segment)
	case err != nil:
		return err
	}
	details := map[string]string{"segment": t.Segment, "expires_at": t.ExpiresAt.Format(time.RFC3339)}
	if t.Name != "" {
		details["name"] = t.Name
	}
	a.mutated(r, actor, audit.AdminGatewayTokenCreate, t.ID, details, false)
	return created(w, adminapi.CreateGatewayTokenResponse{GatewayToken: tokenOut(t), Token: secret})
}

func (a *API) listGatewayTokens(w http.ResponseWriter, r *http.Request, _ string) error {
	xs, err := a.st.ListEnrollTokens(r.Context())
	if err != nil {
		return err
	}
	return ok(w, mapSlice(xs, tokenOut))
}

func gatewayOut(g store.Gateway) adminapi.Gateway {
	return adminapi.Gateway{
		ID: g.ID, Name: g.Name, Segment: g.Segment, PublicKey: g.PublicKey,
		OverlayAddr: g.OverlayAddr, Endpoint: g.Endpoint, CreatedAt: g.CreatedAt,
	}
}

func (a *API) listGateways(w http.ResponseWriter, r *http.Request, _ string) error {
	xs, err := a.st.ListGateways(r.Context())
	if err != nil {
		return err
	}
	return ok(w, mapSlice(xs, gatewayOut))
}

func (a *API) deleteGateway(w http.ResponseWriter, r *http.Request, actor string) error {
	id := r.PathValue("id")
	switch err := a.st.DeleteGateway(r.Context(), id); {
	case errors.Is(err, store.ErrNotFound):
		return notFoundf("gateway %q not found", clip(id))
	case err != nil:
		return err
	}
	a.mutated(r, actor, audit.AdminGatewayDelete, id, nil, true)
	return noContent(w)
}

func deviceOut(d store.Device) adminapi.Device {
	return adminapi.Device{
		ID: d.ID, User: d.User, Hostname: d.Hostname, PublicKey: d.PublicKey,
		OverlayAddr: d.OverlayAddr, CreatedAt: d.CreatedAt, RevokedAt: d.RevokedAt,
	}
}

func (a *API) listDevices(w http.ResponseWriter, r *http.Request, _ string) error {
	xs, err := a.st.ListDevices(r.Context())
	if err != nil {
		return err
	}
	return ok(w, mapSlice(xs, deviceOut))
}

func (a *API) deleteDevice(w http.ResponseWriter, r *http.Request, actor string) error {
	id := r.PathValue("id")
	switch err := a.st.DeleteDevice(r.Context(), id); {
	case errors.Is(err, store.ErrNotFound):
		return notFoundf("device %q not found", clip(id))
	case err != nil:
		return err
	}
	a.mutated(r, actor, audit.AdminDeviceDelete, id, nil, true)
	return noContent(w)
}

// Audit.

func (a *API) listAudit(w http.ResponseWriter, r *http.Request, _ string) error {
	q := r.URL.Query()
	f := store.AuditFilter{Type: q.Get("type"), Limit: 100}
	if len(f.Type) > 200 {
		return invalidf("parameter \"type\": too long")
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > adminapi.MaxAuditLimit {
			return invalidf("parameter \"limit\": %q: want a number from 1 to %d", clip(s), adminapi.MaxAuditLimit)
		}
		f.Limit = n
	}
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return invalidf("parameter \"after\": %q: want a sequence number (0 or more)", clip(s))
		}
		f.AfterSeq = n
	}
	evs, err := a.st.ListAudit(r.Context(), f)
	if err != nil {
		return err
	}
	return ok(w, mapSlice(evs, func(e store.AuditEvent) adminapi.AuditEvent { return adminapi.AuditEvent(e) }))
}

// Helpers.

func mapSlice[T, U any](xs []T, f func(T) U) []U {
	out := make([]U, len(xs)) // never nil: lists encode as []
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

func nonNil[T any](xs []T) []T {
	if xs == nil {
		return []T{}
	}
	return xs
}

// newID returns prefix + 10 random hex characters.
func newID(prefix string) string {
	var b [5]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}
