package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
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
	seg, err = a.state.CreateSegment(r.Context(), origin(r, actor), seg)
	if err != nil {
		return err
	}
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
	if err := a.state.DeleteSegment(r.Context(), origin(r, actor), name); err != nil {
		return err
	}
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
		Proto: x.Proto, Ports: ports, Classification: string(x.Classification), Emergency: x.Emergency, CreatedAt: x.CreatedAt,
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
	app, err = a.state.CreateApp(r.Context(), origin(r, actor), app, appInSegment)
	if err != nil {
		return err
	}
	out := appOut(app)
	if implied, outside := a.dns.OutsideZones(app.DNSName); outside {
		zones := "the controller has no --dns-zone"
		if len(a.dns.Zones) > 0 {
			zones = "its zones are " + strings.Join(a.dns.Zones, ", ")
		}
		out.Warnings = append(out.Warnings, fmt.Sprintf("DNS name %s is in none of the controller's internal DNS zones (%s): clients now treat every name under %s as internal and never ask their own resolver for one; give the controller --dns-zone %s to say so, or name the app inside a zone",
			app.DNSName, zones, implied, implied))
	}
	return created(w, out)
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
	if err := a.state.DeleteApp(r.Context(), origin(r, actor), name); err != nil {
		return err
	}
	return noContent(w)
}

// Users.

func userOut(u store.User) adminapi.User {
	return adminapi.User{Name: u.Name, Disabled: u.Disabled, BreakGlass: u.BreakGlass, CreatedAt: u.CreatedAt}
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
	codes, hashes := auth.NewRecoveryCodes(req.Name, auth.RecoveryCodeCount)
	u, err := a.state.CreateUser(r.Context(), origin(r, actor), store.User{Name: req.Name, PasswordHash: hash, TOTPSecret: secret}, hashes)
	if err != nil {
		return err
	}
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
	return func(w http.ResponseWriter, r *http.Request, actor string) error {
		name := r.PathValue("name")
		if err := checkPathName("user", name); err != nil {
			return err
		}
		// Disabling ends the user's sessions in the same transaction;
		// enabling does not bring them back: the user signs in again.
		u, err := a.state.SetUserDisabled(r.Context(), origin(r, actor), name, disabled)
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
	if err := a.state.DeleteUser(r.Context(), origin(r, actor), name); err != nil {
		return err
	}
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
	g, err := a.state.CreateGroup(r.Context(), origin(r, actor), store.Group{Name: req.Name})
	if err != nil {
		return err
	}
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
	if err := a.state.DeleteGroup(r.Context(), origin(r, actor), name); err != nil {
		return err
	}
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
	g, err := a.state.AddMember(r.Context(), origin(r, actor), group, req.User)
	if err != nil {
		return err
	}
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
	if err := a.state.RemoveMember(r.Context(), origin(r, actor), group, user); err != nil {
		return err
	}
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
	rule, err := a.state.CreateRule(r.Context(), origin(r, actor), store.Rule{Name: req.Name, Group: req.Group, App: req.App})
	if err != nil {
		return err
	}
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
	if err := a.state.DeleteRule(r.Context(), origin(r, actor), name); err != nil {
		return err
	}
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
	secret, hash := auth.NewEnrollToken()
	now := a.stamp()
	t := store.EnrollToken{
		ID: state.NewID("gwt-"), Hash: hash, Segment: req.Segment, Name: req.Name,
		CreatedAt: now, ExpiresAt: now.Add(ttl),
	}
	err = a.state.CreateEnrollToken(r.Context(), origin(r, actor), t)
	if err != nil {
		return err
	}
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
		OverlayAddr: g.OverlayAddr, Endpoint: g.Endpoint, CreatedAt: g.CreatedAt, DrainedAt: g.DrainedAt,
	}
}

func (a *API) listGateways(w http.ResponseWriter, r *http.Request, _ string) error {
	xs, err := a.st.ListGateways(r.Context())
	if err != nil {
		return err
	}
	out := mapSlice(xs, gatewayOut)
	for i := range out {
		a.gatewayHealth(&out[i])
	}
	return ok(w, out)
}

// gatewayHealth fills g's state, version, last seen and load from the
// control channel's view (nothing without one).
func (a *API) gatewayHealth(g *adminapi.Gateway) {
	h := a.health
	if h == nil {
		return
	}
	g.State, g.Version, g.LastSeen = h.GatewayStatus(g.ID)
	if g.State == gatewayUp && !g.DrainedAt.IsZero() {
		g.State = "draining"
	}
	if loader, _ := h.(GatewayLoader); loader != nil {
		if peers, flows, ok := loader.GatewayLoad(g.ID); ok {
			g.Peers, g.Flows = &peers, &flows
		}
	}
}

// gatewayUp is GatewayHealth's state of a gateway with its control
// connection open (control.GatewayUp).
const gatewayUp = "up"

// gatewayByRef finds a gateway by ID or, failing that, by its name (which
// must then be unique).
func (a *API) gatewayByRef(r *http.Request, ref string) (store.Gateway, error) {
	xs, err := a.st.ListGateways(r.Context())
	if err != nil {
		return store.Gateway{}, err
	}
	var named []store.Gateway
	for _, g := range xs {
		if g.ID == ref {
			return g, nil
		}
		if g.Name == ref {
			named = append(named, g)
		}
	}
	switch len(named) {
	case 0:
		return store.Gateway{}, notFoundf("gateway %q not found: 'cordonctl gateway list' shows the gateways", clip(ref))
	case 1:
		return named[0], nil
	}
	return store.Gateway{}, conflictf("%d gateways are named %q: name one by its ID ('cordonctl gateway list' shows them)", len(named), clip(ref))
}

// drainGateway drains a gateway (by ID or name) before maintenance: its
// clients move to the segment's other gateways without a failed request.
func (a *API) drainGateway(w http.ResponseWriter, r *http.Request, actor string) error {
	var req adminapi.DrainGatewayRequest
	if r.ContentLength != 0 {
		if err := decode(w, r, &req); err != nil {
			return err
		}
	}
	g, err := a.gatewayByRef(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	live := func(id string) bool {
		if a.health == nil {
			return true // no control channel to ask: the admin's word
		}
		st, _, _ := a.health.GatewayStatus(id)
		return st == gatewayUp
	}
	if err := a.state.DrainGateway(r.Context(), origin(r, actor), g.ID, req.Force, live); err != nil {
		return err
	}
	return a.gatewayNow(w, r, g.ID)
}

// undrainGateway lets a drained gateway (by ID or name) take clients again.
func (a *API) undrainGateway(w http.ResponseWriter, r *http.Request, actor string) error {
	g, err := a.gatewayByRef(r, r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := a.state.UndrainGateway(r.Context(), origin(r, actor), g.ID); err != nil {
		return err
	}
	return a.gatewayNow(w, r, g.ID)
}

// gatewayNow answers with gateway id as stored now, with its health.
func (a *API) gatewayNow(w http.ResponseWriter, r *http.Request, id string) error {
	g, err := a.st.GetGateway(r.Context(), id)
	if err != nil {
		return err
	}
	out := gatewayOut(g)
	a.gatewayHealth(&out)
	return ok(w, out)
}

func (a *API) deleteGateway(w http.ResponseWriter, r *http.Request, actor string) error {
	id := r.PathValue("id")
	if err := a.state.DeleteGateway(r.Context(), origin(r, actor), id); err != nil {
		return err
	}
	return noContent(w)
}

func deviceOut(d store.Device) adminapi.Device {
	out := adminapi.Device{
		ID: d.ID, User: d.User, Hostname: d.Hostname, PublicKey: d.PublicKey,
		OverlayAddr: d.OverlayAddr, CreatedAt: d.CreatedAt, RevokedAt: d.RevokedAt,
	}
	if q := d.Quarantine; q.Active() {
		out.Quarantine = &adminapi.Quarantine{At: q.At, By: q.By, Reason: q.Reason}
	}
	return out
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
	if err := a.state.DeleteDevice(r.Context(), origin(r, actor), id); err != nil {
		return err
	}
	return noContent(w)
}

// Audit.

func (a *API) listAudit(w http.ResponseWriter, r *http.Request, _ string) error {
	q := r.URL.Query()
	f := store.AuditFilter{Type: q.Get("type"), RequestID: q.Get("request"), Limit: 100}
	if len(f.Type) > 200 {
		return invalidf("parameter \"type\": too long")
	}
	if len(f.RequestID) > adminapi.MaxRequestIDLen {
		return invalidf("parameter \"request\": too long")
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
