package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/apitest"
	"github.com/cordonhq/cordon/controller/internal/auth"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

type env struct {
	*apitest.Server
	t     *testing.T
	admin *adminapi.Client
	agent *adminapi.Client
}

func newEnv(t *testing.T, opts ...apitest.Options) *env {
	t.Helper()
	var o apitest.Options
	if len(opts) > 0 {
		o = opts[0]
	}
	s := apitest.New(t, o)
	admin, err := adminapi.New(s.URL, s.AdminToken, s.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	agent, err := adminapi.New(s.URL, "", s.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	t.Cleanup(agent.Close)
	return &env{Server: s, t: t, admin: admin, agent: agent}
}

// wantCode asserts err is an API error with code and a message containing
// every one of msgs.
func wantCode(t *testing.T, err error, status int, code string, msgs ...string) {
	t.Helper()
	var ae *adminapi.Error
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v (%T), want API error %s", err, err, code)
	}
	if ae.Status != status || ae.Code != code {
		t.Fatalf("err = %d %s %q, want %d %s", ae.Status, ae.Code, ae.Message, status, code)
	}
	for _, m := range msgs {
		if !strings.Contains(ae.Message, m) {
			t.Errorf("message %q does not mention %q", ae.Message, m)
		}
	}
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func (e *env) audit(typ string) []store.AuditEvent {
	e.t.Helper()
	evs, err := e.Store.ListAudit(context.Background(), store.AuditFilter{Type: typ, Limit: 1000})
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

// raw sends a request with any body and returns status and body.
func (e *env) raw(method, path, token string, body string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.HTTPClient().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func csr(t *testing.T, cn string) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn, OrganizationalUnit: []string{"admin"}}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func wgPub(t *testing.T) wgkey.Public {
	k, err := wgkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

func certSubject(t *testing.T, certPEM string) pkix.Name {
	t.Helper()
	b, _ := pem.Decode([]byte(certPEM))
	if b == nil {
		t.Fatalf("certificate is not PEM: %q", certPEM)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.Subject
}

func TestHealthz(t *testing.T) {
	e := newEnv(t)
	if st, body := e.raw("GET", "/healthz", "", ""); st != 200 || body != "ok" {
		t.Fatalf("healthz = %d %q", st, body)
	}
}

func TestAdminAuth(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	noTok := must[*adminapi.Client](t)(adminapi.New(e.URL, "", e.CAPEM))
	badTok := must[*adminapi.Client](t)(adminapi.New(e.URL, "cordon-admin-wrong", e.CAPEM))
	for name, c := range map[string]*adminapi.Client{"none": noTok, "bad": badTok} {
		_, err := c.ListSegments(ctx)
		wantCode(t, err, 401, adminapi.CodeUnauthorized, "--token")
		_, err = c.CreateSegment(ctx, &adminapi.CreateSegmentRequest{Name: "x", CIDRs: []string{"10.0.0.0/24"}})
		wantCode(t, err, 401, adminapi.CodeUnauthorized)
		_ = name
	}
	if st, _ := e.raw("GET", "/v1/segments", "", ""); st != 401 {
		t.Errorf("no header: %d", st)
	}
	// Basic auth with the right secret is still not a bearer token.
	req, _ := http.NewRequest("GET", e.URL+"/v1/segments", nil)
	req.SetBasicAuth("admin", e.AdminToken)
	resp, err := e.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("basic auth: %d", resp.StatusCode)
	}
	if _, err := e.Store.ListSegments(ctx); err != nil {
		t.Fatal(err)
	}
	fails := e.audit("admin.auth")
	if len(fails) < 5 || fails[0].Outcome != "failure" || fails[0].Details["source"] != "127.0.0.1" {
		t.Fatalf("admin.auth audit = %+v", fails)
	}
	who := must[*adminapi.WhoAmI](t)(e.admin.WhoAmI(ctx))
	if who.Actor != "admin:"+apitest.AdminTokenName {
		t.Errorf("whoami = %q", who.Actor)
	}
	if strings.Contains(e.Logs(), e.AdminToken) || strings.Contains(e.Logs(), "cordon-admin-wrong") {
		t.Error("a token appears in the log")
	}
}

func TestSegments(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	seg := must[*adminapi.Segment](t)(e.admin.CreateSegment(ctx, &adminapi.CreateSegmentRequest{Name: "clinical", CIDRs: []string{"10.20.0.0/24", "fd00:20::/64"}}))
	if seg.Name != "clinical" || len(seg.CIDRs) != 2 || !seg.CreatedAt.Equal(e.Now()) {
		t.Fatalf("created %+v", seg)
	}
	if e.Changed() != 1 {
		t.Errorf("Changed called %d times", e.Changed())
	}
	got := must[*adminapi.Segment](t)(e.admin.GetSegment(ctx, "clinical"))
	if got.CIDRs[0].String() != "10.20.0.0/24" || !got.CreatedAt.Equal(seg.CreatedAt) {
		t.Errorf("get %+v", got)
	}
	list := must[[]adminapi.Segment](t)(e.admin.ListSegments(ctx))
	if len(list) != 1 {
		t.Errorf("list %+v", list)
	}

	for _, tc := range []struct {
		req  adminapi.CreateSegmentRequest
		msgs []string
	}{
		{adminapi.CreateSegmentRequest{Name: "Bad_Name", CIDRs: []string{"10.0.0.0/24"}}, []string{`"name"`, "lower-case"}},
		{adminapi.CreateSegmentRequest{Name: "", CIDRs: []string{"10.0.0.0/24"}}, []string{`"name"`, "required"}},
		{adminapi.CreateSegmentRequest{Name: "lab"}, []string{`"cidrs"`}},
		{adminapi.CreateSegmentRequest{Name: "lab", CIDRs: []string{"10.0.0.0/33"}}, []string{`"cidrs"[0]`, "10.0.0.0/33"}},
		{adminapi.CreateSegmentRequest{Name: "lab", CIDRs: []string{"10.0.0.0/24", "10.1.0.1/16"}}, []string{`"cidrs"[1]`, "did you mean 10.1.0.0/16"}},
		{adminapi.CreateSegmentRequest{Name: "lab", CIDRs: []string{"100.64.1.0/24"}}, []string{"overlay"}},
		{adminapi.CreateSegmentRequest{Name: "lab", CIDRs: []string{"10.0.0.0/24", "10.0.0.0/24"}}, []string{"twice"}},
	} {
		_, err := e.admin.CreateSegment(ctx, &tc.req)
		wantCode(t, err, 400, adminapi.CodeInvalid, tc.msgs...)
	}
	_, err := e.admin.CreateSegment(ctx, &adminapi.CreateSegmentRequest{Name: "clinical", CIDRs: []string{"10.9.0.0/24"}})
	wantCode(t, err, 409, adminapi.CodeConflict, "clinical", "already exists")
	_, err = e.admin.GetSegment(ctx, "nope")
	wantCode(t, err, 404, adminapi.CodeNotFound, `"nope"`)
	_, err = e.admin.GetSegment(ctx, "NOT..valid")
	wantCode(t, err, 404, adminapi.CodeNotFound)
	wantCode(t, e.admin.DeleteSegment(ctx, "nope"), 404, adminapi.CodeNotFound)

	// In use by apps: the refusal names them.
	must[*adminapi.App](t)(e.admin.CreateApp(ctx, &adminapi.CreateAppRequest{Name: "ehr", Segment: "clinical", DNSName: "ehr.hospital.internal", Address: "10.20.0.5", Proto: "tcp", Ports: []string{"443"}}))
	must[*adminapi.App](t)(e.admin.CreateApp(ctx, &adminapi.CreateAppRequest{Name: "pacs", Segment: "clinical", DNSName: "pacs.hospital.internal", Address: "10.20.0.6", Proto: "tcp", Ports: []string{"443"}}))
	wantCode(t, e.admin.DeleteSegment(ctx, "clinical"), 409, adminapi.CodeInUse, "apps ehr, pacs")
	for _, app := range []string{"ehr", "pacs"} {
		if err := e.admin.DeleteApp(ctx, app); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.admin.DeleteSegment(ctx, "clinical"); err != nil {
		t.Fatal(err)
	}

	evs := e.audit("admin.segment.")
	if len(evs) != 2 || evs[0].Type != "admin.segment.delete" || evs[1].Type != "admin.segment.create" ||
		evs[1].Actor != "admin:root" || evs[1].Subject != "clinical" || evs[1].Outcome != "success" {
		t.Fatalf("audit %+v", evs)
	}
}

func setupSegment(t *testing.T, e *env) {
	t.Helper()
	must[*adminapi.Segment](t)(e.admin.CreateSegment(t.Context(), &adminapi.CreateSegmentRequest{Name: "clinical", CIDRs: []string{"10.20.0.0/24", "fd00:20::/64"}}))
}

func TestApps(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	setupSegment(t, e)
	app := must[*adminapi.App](t)(e.admin.CreateApp(ctx, &adminapi.CreateAppRequest{
		Name: "pacs", Segment: "clinical", DNSName: "PACS.Hospital.Internal.", Address: "10.20.0.16/28",
		Proto: "tcp", Ports: []string{"104", "8000-8099"},
	}))
	if app.DNSName != "pacs.hospital.internal" || app.Classification != "phi" || app.Address.String() != "10.20.0.16/28" ||
		strings.Join(app.Ports, ",") != "104,8000-8099" || app.Proto.String() != "tcp" {
		t.Fatalf("created %+v", app)
	}
	got := must[*adminapi.App](t)(e.admin.GetApp(ctx, "pacs"))
	if got.Address != app.Address || strings.Join(got.Ports, ",") != "104,8000-8099" || got.Classification != "phi" {
		t.Errorf("get %+v", got)
	}
	v6 := must[*adminapi.App](t)(e.admin.CreateApp(ctx, &adminapi.CreateAppRequest{
		Name: "lab", Segment: "clinical", DNSName: "lab.hospital.internal", Address: "fd00:20::5", Proto: "udp", Ports: []string{"*"}, Classification: "internal",
	}))
	if v6.Address.Bits() != 128 || v6.Classification != "internal" || v6.Ports[0] != "*" {
		t.Errorf("v6 %+v", v6)
	}
	if n := len(must[[]adminapi.App](t)(e.admin.ListApps(ctx))); n != 2 {
		t.Errorf("list has %d", n)
	}

	base := adminapi.CreateAppRequest{Name: "x", Segment: "clinical", DNSName: "x.hospital.internal", Address: "10.20.0.9", Proto: "tcp", Ports: []string{"80"}}
	for _, tc := range []struct {
		mod  func(*adminapi.CreateAppRequest)
		msgs []string
	}{
		{func(r *adminapi.CreateAppRequest) { r.Address = "10.30.0.9" }, []string{`"address"`, "not inside segment", "10.20.0.0/24"}},
		{func(r *adminapi.CreateAppRequest) { r.Address = "10.20.0.0/16" }, []string{"not inside segment"}},
		{func(r *adminapi.CreateAppRequest) { r.Address = "10.20.0.9/24" }, []string{"host bits"}},
		{func(r *adminapi.CreateAppRequest) { r.Address = "ehr" }, []string{`"address"`}},
		{func(r *adminapi.CreateAppRequest) { r.DNSName = "ehr" }, []string{`"dns_name"`}},
		{func(r *adminapi.CreateAppRequest) { r.DNSName = "bad_name.hospital.internal" }, []string{`"dns_name"`}},
		{func(r *adminapi.CreateAppRequest) { r.DNSName = "-x.hospital.internal" }, []string{`"dns_name"`}},
		{func(r *adminapi.CreateAppRequest) { r.Ports = []string{"70000"} }, []string{`"ports"[0]`}},
		{func(r *adminapi.CreateAppRequest) { r.Ports = []string{"0"} }, []string{`"ports"[0]`}},
		{func(r *adminapi.CreateAppRequest) { r.Ports = []string{"90-80"} }, []string{`"ports"[0]`}},
		{func(r *adminapi.CreateAppRequest) { r.Ports = nil }, []string{`"ports"`, "required"}},
		{func(r *adminapi.CreateAppRequest) { r.Proto = "sctp" }, []string{`"proto"`, "tcp"}},
		{func(r *adminapi.CreateAppRequest) { r.Proto = "" }, []string{`"proto"`}},
		{func(r *adminapi.CreateAppRequest) { r.Classification = "secret" }, []string{`"classification"`, "phi"}},
		{func(r *adminapi.CreateAppRequest) { r.Proto = "icmp" }, []string{`"ports"`, "no ports"}},
	} {
		r := base
		tc.mod(&r)
		_, err := e.admin.CreateApp(ctx, &r)
		wantCode(t, err, 400, adminapi.CodeInvalid, tc.msgs...)
	}
	r := base
	r.Segment = "radiology"
	_, err := e.admin.CreateApp(ctx, &r)
	wantCode(t, err, 404, adminapi.CodeNotFound, "radiology")
	r = base
	r.DNSName = "pacs.hospital.internal"
	_, err = e.admin.CreateApp(ctx, &r)
	wantCode(t, err, 409, adminapi.CodeConflict, "pacs")
	r = base
	r.Name = "pacs"
	_, err = e.admin.CreateApp(ctx, &r)
	wantCode(t, err, 409, adminapi.CodeConflict)

	if evs := e.audit("admin.app.create"); len(evs) != 2 || evs[0].Details["segment"] != "clinical" {
		t.Errorf("audit %+v", evs)
	}
}

func TestUsersNeverRevealSecrets(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	const pw = "correct horse battery staple"
	u := must[*adminapi.CreateUserResponse](t)(e.admin.CreateUser(ctx, &adminapi.CreateUserRequest{Name: "nurse", Password: pw}))
	if u.Name != "nurse" || u.TOTPSecret == "" || !strings.HasPrefix(u.TOTPURI, "otpauth://totp/Cordon:nurse?") {
		t.Fatalf("created %+v", u)
	}
	stored, err := e.Store.GetUser(ctx, "nurse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stored.PasswordHash, "$argon2id$") || stored.TOTPSecret != u.TOTPSecret {
		t.Fatalf("stored %+v", stored)
	}
	for _, path := range []string{"/v1/users", "/v1/users/nurse"} {
		st, body := e.raw("GET", path, e.AdminToken, "")
		if st != 200 || strings.Contains(body, u.TOTPSecret) || strings.Contains(body, "argon2") || strings.Contains(body, "totp") {
			t.Errorf("GET %s = %d %s", path, st, body)
		}
	}
	_, err = e.admin.CreateUser(ctx, &adminapi.CreateUserRequest{Name: "doctor", Password: "short pw"})
	wantCode(t, err, 400, adminapi.CodeInvalid, `"password"`, "at least 12")
	if strings.Contains(err.Error(), "short pw") {
		t.Error("error echoes the password")
	}
	_, err = e.admin.CreateUser(ctx, &adminapi.CreateUserRequest{Name: "nurse", Password: pw})
	wantCode(t, err, 409, adminapi.CodeConflict)
	_, err = e.admin.CreateUser(ctx, &adminapi.CreateUserRequest{Name: "dr.who", Password: pw})
	wantCode(t, err, 400, adminapi.CodeInvalid, `"name"`)
	if strings.Contains(e.Logs(), pw) || strings.Contains(e.Logs(), u.TOTPSecret) {
		t.Error("a secret appears in the log")
	}
	if err := e.admin.DeleteUser(ctx, "nurse"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, e.admin.DeleteUser(ctx, "nurse"), 404, adminapi.CodeNotFound)
	if evs := e.audit("admin.user."); len(evs) != 2 {
		t.Errorf("audit %+v", evs)
	}
}

func TestGroupsAndRules(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	setupSegment(t, e)
	must[*adminapi.App](t)(e.admin.CreateApp(ctx, &adminapi.CreateAppRequest{Name: "ehr", Segment: "clinical", DNSName: "ehr.hospital.internal", Address: "10.20.0.5", Proto: "tcp", Ports: []string{"443"}}))
	must[*adminapi.CreateUserResponse](t)(e.admin.CreateUser(ctx, &adminapi.CreateUserRequest{Name: "nurse", Password: "correct horse battery"}))
	g := must[*adminapi.Group](t)(e.admin.CreateGroup(ctx, &adminapi.CreateGroupRequest{Name: "nurses"}))
	if g.Members == nil || len(g.Members) != 0 {
		t.Errorf("new group members = %#v, want []", g.Members)
	}
	g = must[*adminapi.Group](t)(e.admin.AddMember(ctx, "nurses", "nurse"))
	if strings.Join(g.Members, ",") != "nurse" {
		t.Errorf("members %v", g.Members)
	}
	_, err := e.admin.AddMember(ctx, "nurses", "nurse")
	wantCode(t, err, 409, adminapi.CodeConflict, "already a member")
	_, err = e.admin.AddMember(ctx, "nurses", "ghost")
	wantCode(t, err, 404, adminapi.CodeNotFound, `user "ghost"`)
	_, err = e.admin.AddMember(ctx, "ghosts", "nurse")
	wantCode(t, err, 404, adminapi.CodeNotFound, `group "ghosts"`)

	rule := must[*adminapi.Rule](t)(e.admin.CreateRule(ctx, &adminapi.CreateRuleRequest{Name: "nurses-ehr", Group: "nurses", App: "ehr"}))
	if rule.Group != "nurses" || rule.App != "ehr" {
		t.Errorf("rule %+v", rule)
	}
	_, err = e.admin.CreateRule(ctx, &adminapi.CreateRuleRequest{Name: "r2", Group: "nurses", App: "pacs"})
	wantCode(t, err, 404, adminapi.CodeNotFound, `app "pacs"`)
	_, err = e.admin.CreateRule(ctx, &adminapi.CreateRuleRequest{Name: "r2", Group: "x", App: "ehr"})
	wantCode(t, err, 404, adminapi.CodeNotFound, `group "x"`)
	_, err = e.admin.CreateRule(ctx, &adminapi.CreateRuleRequest{Name: "nurses-ehr", Group: "nurses", App: "ehr"})
	wantCode(t, err, 409, adminapi.CodeConflict)
	_, err = e.admin.CreateRule(ctx, &adminapi.CreateRuleRequest{Name: "r3", App: "ehr"})
	wantCode(t, err, 400, adminapi.CodeInvalid, `"group"`)
	if got := must[*adminapi.Rule](t)(e.admin.GetRule(ctx, "nurses-ehr")); got.Name != "nurses-ehr" {
		t.Errorf("get %+v", got)
	}
	if n := len(must[[]adminapi.Rule](t)(e.admin.ListRules(ctx))); n != 1 {
		t.Errorf("%d rules", n)
	}
	wantCode(t, e.admin.DeleteGroup(ctx, "nurses"), 409, adminapi.CodeInUse, "rules")
	wantCode(t, e.admin.DeleteApp(ctx, "ehr"), 409, adminapi.CodeInUse, "rules")

	if err := e.admin.RemoveMember(ctx, "nurses", "nurse"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, e.admin.RemoveMember(ctx, "nurses", "nurse"), 404, adminapi.CodeNotFound, "not a member")
	if err := e.admin.DeleteRule(ctx, "nurses-ehr"); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.DeleteGroup(ctx, "nurses"); err != nil {
		t.Fatal(err)
	}
	_, err = e.admin.GetGroup(ctx, "nurses")
	wantCode(t, err, 404, adminapi.CodeNotFound)

	types := map[audit.Type]bool{}
	for _, ev := range e.audit("admin.") {
		types[ev.Type] = true
	}
	for _, want := range []audit.Type{"admin.group.create", "admin.group.add_member", "admin.group.remove_member", "admin.group.delete", "admin.rule.create", "admin.rule.delete"} {
		if !types[want] {
			t.Errorf("no %s audit event", want)
		}
	}
	if ev := e.audit("admin.group.add_member"); ev[0].Subject != "nurses" || ev[0].Details["user"] != "nurse" {
		t.Errorf("add_member audit %+v", ev[0])
	}
}

func TestGatewayTokenEnrollment(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	setupSegment(t, e)

	tok := must[*adminapi.CreateGatewayTokenResponse](t)(e.admin.CreateGatewayToken(ctx, &adminapi.CreateGatewayTokenRequest{Segment: "clinical", Name: "gw-east"}))
	if !strings.HasPrefix(tok.Token, auth.EnrollTokenPrefix) || !tok.ExpiresAt.Equal(e.Now().Add(time.Hour)) || tok.ID == "" {
		t.Fatalf("token %+v", tok)
	}
	if st, body := e.raw("GET", "/v1/gateway-tokens", e.AdminToken, ""); st != 200 || strings.Contains(body, tok.Token) || !strings.Contains(body, tok.ID) {
		t.Fatalf("list tokens = %d %s", st, body)
	}
	if strings.Contains(e.Logs(), tok.Token) {
		t.Fatal("token secret logged")
	}
	changed := e.Changed()

	pub := wgPub(t)
	req := &controlproto.EnrollGatewayRequest{Token: tok.Token, Name: "whatever", PublicKey: pub, CSR: "garbage", Endpoint: "gw.hospital.example:51820"}
	// A bad CSR is rejected before the token is consumed.
	_, err := e.agent.EnrollGateway(ctx, req)
	wantCode(t, err, 400, adminapi.CodeInvalid, `"csr"`)

	req.CSR = csr(t, "controller") // the CSR's subject must be ignored
	resp := must[*controlproto.EnrollResponse](t)(e.agent.EnrollGateway(ctx, req))
	if !strings.HasPrefix(resp.ID, "gw-") || len(resp.ID) != 13 || !resp.OverlayAddr.IsValid() {
		t.Fatalf("enroll response %+v", resp)
	}
	if sub := certSubject(t, resp.Certificate); sub.CommonName != resp.ID || len(sub.OrganizationalUnit) != 1 || sub.OrganizationalUnit[0] != "gateway" {
		t.Fatalf("certificate subject %+v, want CN=%s OU=gateway", sub, resp.ID)
	}
	if e.Changed() != changed+1 {
		t.Error("enrollment did not report a change")
	}
	gws := must[[]adminapi.Gateway](t)(e.admin.ListGateways(ctx))
	if len(gws) != 1 || gws[0].ID != resp.ID || gws[0].Name != "gw-east" || gws[0].Segment != "clinical" || gws[0].PublicKey != pub || gws[0].Endpoint != req.Endpoint {
		t.Fatalf("gateways %+v", gws)
	}
	toks := must[[]adminapi.GatewayToken](t)(e.admin.ListGatewayTokens(ctx))
	if len(toks) != 1 || toks[0].UsedAt == nil || toks[0].UsedBy != resp.ID {
		t.Fatalf("tokens after use %+v", toks)
	}

	// Single use.
	req.PublicKey = wgPub(t)
	req.CSR = csr(t, "x")
	_, err = e.agent.EnrollGateway(ctx, req)
	wantCode(t, err, 401, adminapi.CodeTokenInvalid, "cordonctl gateway token create")
	// Unknown and malformed tokens.
	req.Token = "cordon-enroll-AAAA"
	_, err = e.agent.EnrollGateway(ctx, req)
	wantCode(t, err, 401, adminapi.CodeTokenInvalid)
	// Expired.
	tok2 := must[*adminapi.CreateGatewayTokenResponse](t)(e.admin.CreateGatewayToken(ctx, &adminapi.CreateGatewayTokenRequest{Segment: "clinical", TTL: "30m"}))
	e.Advance(31 * time.Minute)
	req.Token = tok2.Token
	_, err = e.agent.EnrollGateway(ctx, req)
	wantCode(t, err, 401, adminapi.CodeTokenInvalid)
	// A token without a name lets the gateway choose.
	tok3 := must[*adminapi.CreateGatewayTokenResponse](t)(e.admin.CreateGatewayToken(ctx, &adminapi.CreateGatewayTokenRequest{Segment: "clinical", TTL: "7d"}))
	req.Token, req.Name = tok3.Token, "gw-west"
	resp3 := must[*controlproto.EnrollResponse](t)(e.agent.EnrollGateway(ctx, req))
	if g, _ := e.Store.GetGateway(ctx, resp3.ID); g.Name != "gw-west" {
		t.Errorf("gateway name %q", g.Name)
	}

	for _, tc := range []struct {
		req  adminapi.CreateGatewayTokenRequest
		code string
		msg  string
	}{
		{adminapi.CreateGatewayTokenRequest{Segment: "clinical", TTL: "8d"}, adminapi.CodeInvalid, "at most 7d"},
		{adminapi.CreateGatewayTokenRequest{Segment: "clinical", TTL: "soon"}, adminapi.CodeInvalid, `"ttl"`},
		{adminapi.CreateGatewayTokenRequest{Segment: "clinical", TTL: "-1h"}, adminapi.CodeInvalid, `"ttl"`},
		{adminapi.CreateGatewayTokenRequest{Segment: "radiology"}, adminapi.CodeNotFound, "radiology"},
		{adminapi.CreateGatewayTokenRequest{}, adminapi.CodeInvalid, `"segment"`},
	} {
		_, err := e.admin.CreateGatewayToken(ctx, &tc.req)
		status := 400
		if tc.code == adminapi.CodeNotFound {
			status = 404
		}
		wantCode(t, err, status, tc.code, tc.msg)
	}

	// Field validation of the enrollment body.
	for _, tc := range []struct {
		mod func(*controlproto.EnrollGatewayRequest)
		msg string
	}{
		{func(r *controlproto.EnrollGatewayRequest) { r.Token = "" }, `"token"`},
		{func(r *controlproto.EnrollGatewayRequest) { r.PublicKey = wgkey.Public{} }, `"public_key"`},
		{func(r *controlproto.EnrollGatewayRequest) { r.CSR = "" }, `"csr"`},
		{func(r *controlproto.EnrollGatewayRequest) { r.Endpoint = "no-port" }, `"endpoint"`},
		{func(r *controlproto.EnrollGatewayRequest) { r.Name = "Bad Name" }, `"name"`},
	} {
		r := *req
		tc.mod(&r)
		_, err := e.agent.EnrollGateway(ctx, &r)
		wantCode(t, err, 400, adminapi.CodeInvalid, tc.msg)
	}

	evs := e.audit("enroll.gateway")
	var ok, fail int
	for _, ev := range evs {
		switch ev.Outcome {
		case "success":
			ok++
			if !strings.HasPrefix(ev.Actor, "gateway:gw-") {
				t.Errorf("actor %q", ev.Actor)
			}
		case "failure":
			fail++
		}
	}
	if ok != 2 || fail != 3 {
		t.Errorf("enroll.gateway audit: %d success, %d failure; want 2, 3", ok, fail)
	}
	if evs := e.audit("admin.gateway_token.create"); len(evs) != 3 {
		t.Errorf("%d token audit events", len(evs))
	}

	if err := e.admin.DeleteGateway(ctx, resp.ID); err != nil {
		t.Fatal(err)
	}
	wantCode(t, e.admin.DeleteGateway(ctx, resp.ID), 404, adminapi.CodeNotFound)
	if evs := e.audit("admin.gateway.delete"); len(evs) != 1 || evs[0].Subject != resp.ID {
		t.Errorf("gateway delete audit %+v", evs)
	}
}

type loginEnv struct {
	*env
	secret string
	pw     string
}

func newLoginEnv(t *testing.T, opts ...apitest.Options) *loginEnv {
	e := newEnv(t, opts...)
	const pw = "correct horse battery"
	u := must[*adminapi.CreateUserResponse](t)(e.admin.CreateUser(t.Context(), &adminapi.CreateUserRequest{Name: "nurse", Password: pw}))
	return &loginEnv{env: e, secret: u.TOTPSecret, pw: pw}
}

func (e *loginEnv) code(at time.Time) string {
	c, err := auth.TOTPCode(e.secret, at)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *loginEnv) req() *controlproto.LoginRequest {
	return &controlproto.LoginRequest{
		Username: "nurse", Password: e.pw, TOTP: e.code(e.Now()),
		DeviceEnroll: controlproto.DeviceEnroll{Hostname: "ward3-pc", PublicKey: wgPub(e.t), CSR: csr(e.t, "admin")},
	}
}

func TestLogin(t *testing.T) {
	e := newLoginEnv(t)
	ctx := t.Context()

	req := e.req()
	resp := must[*controlproto.EnrollResponse](t)(e.agent.Login(ctx, req))
	if !strings.HasPrefix(resp.ID, "dev-") || len(resp.ID) != 14 || resp.User != "nurse" || !resp.OverlayAddr.IsValid() {
		t.Fatalf("login response %+v", resp)
	}
	if sub := certSubject(t, resp.Certificate); sub.CommonName != resp.ID || sub.OrganizationalUnit[0] != "client" {
		t.Fatalf("certificate subject %+v", sub)
	}
	devs := must[[]adminapi.Device](t)(e.admin.ListDevices(ctx))
	if len(devs) != 1 || devs[0].ID != resp.ID || devs[0].User != "nurse" || devs[0].Hostname != "ward3-pc" || devs[0].PublicKey != req.PublicKey {
		t.Fatalf("devices %+v", devs)
	}

	// The login with both factors is the device's MFA time.
	mfaAt := func() time.Time {
		t.Helper()
		d, err := e.Store.GetDevice(ctx, resp.ID)
		if err != nil {
			t.Fatal(err)
		}
		return d.MFAAt
	}
	if got := mfaAt(); !got.Equal(e.Now()) {
		t.Fatalf("MFAAt after login = %v, want %v", got, e.Now())
	}

	// The same code again: replay.
	first := e.Now()
	e.Advance(time.Second)
	req2 := e.req()
	req2.TOTP = req.TOTP
	req2.DeviceID = resp.ID
	_, err := e.agent.Login(ctx, req2)
	wantCode(t, err, 401, adminapi.CodeUnauthorized, "login failed")
	if got := mfaAt(); !got.Equal(first) {
		t.Fatalf("a failed login moved MFAAt to %v", got)
	}

	// Re-login of the same device with the next code updates it in place.
	e.Advance(30 * time.Second)
	req3 := e.req()
	req3.DeviceID, req3.Hostname = resp.ID, "ward3-pc-renamed"
	resp3 := must[*controlproto.EnrollResponse](t)(e.agent.Login(ctx, req3))
	if resp3.ID != resp.ID || resp3.OverlayAddr != resp.OverlayAddr {
		t.Fatalf("re-login gave %+v, want device %s", resp3, resp.ID)
	}
	devs = must[[]adminapi.Device](t)(e.admin.ListDevices(ctx))
	if len(devs) != 1 || devs[0].Hostname != "ward3-pc-renamed" || devs[0].PublicKey != req3.PublicKey {
		t.Fatalf("devices after re-login %+v", devs)
	}
	if got := mfaAt(); !got.Equal(e.Now()) {
		t.Fatalf("MFAAt after re-login = %v, want %v", got, e.Now())
	}

	// Another user's device ID is not found.
	must[*adminapi.CreateUserResponse](t)(e.admin.CreateUser(ctx, &adminapi.CreateUserRequest{Name: "doctor", Password: "another long password"}))
	e.Advance(30 * time.Second)
	d, err := e.Store.CreateDevice(ctx, store.Device{ID: "dev-0000000001", User: "doctor", PublicKey: wgPub(t)})
	if err != nil {
		t.Fatal(err)
	}
	req4 := e.req()
	req4.DeviceID = d.ID
	_, err = e.agent.Login(ctx, req4)
	wantCode(t, err, 404, adminapi.CodeNotFound, "without a device ID")

	login := e.audit("auth.login")
	enroll := e.audit("enroll.device")
	if len(enroll) != 2 || enroll[0].Actor != "user:nurse" || enroll[0].Subject != resp.ID {
		t.Errorf("enroll.device audit %+v", enroll)
	}
	var success, replay int
	for _, ev := range login {
		if ev.Outcome == "success" && ev.Details["device"] == resp.ID && ev.Details["source"] == "127.0.0.1" {
			success++
		}
		if ev.Outcome == "failure" && ev.Details["reason"] == "totp replayed" {
			replay++
		}
	}
	if success != 2 || replay != 1 {
		t.Errorf("auth.login audit: %d successes, %d replays: %+v", success, replay, login)
	}

	wantCode(t, e.admin.DeleteDevice(ctx, "dev-nope"), 404, adminapi.CodeNotFound)
	if err := e.admin.DeleteDevice(ctx, resp.ID); err != nil {
		t.Fatal(err)
	}
}

func TestLoginFailures(t *testing.T) {
	e := newLoginEnv(t)
	ctx := t.Context()
	// A disabled user with valid credentials.
	hasher, _ := auth.NewHasher(auth.TestParams)
	hash, _ := hasher.Hash(e.pw)
	if err := e.Store.CreateUser(ctx, store.User{Name: "locked", PasswordHash: hash, TOTPSecret: e.secret, Disabled: true}); err != nil {
		t.Fatal(err)
	}
	wrongCode := func() string {
		c := []byte(e.code(e.Now()))
		c[0] = '0' + (c[0]-'0'+5)%10
		return string(c)
	}
	for _, tc := range []struct {
		name   string
		mod    func(*controlproto.LoginRequest)
		reason string
		msg    string
	}{
		{"wrong password", func(r *controlproto.LoginRequest) { r.Password = "wrong password!!" }, "wrong password", "login failed"},
		{"wrong totp", func(r *controlproto.LoginRequest) { r.TOTP = wrongCode() }, "wrong totp", "login failed"},
		{"old totp", func(r *controlproto.LoginRequest) { r.TOTP = e.code(e.Now().Add(-2 * time.Minute)) }, "wrong totp", "login failed"},
		{"unknown user", func(r *controlproto.LoginRequest) { r.Username = "ghost" }, "unknown user", "login failed"},
		{"disabled", func(r *controlproto.LoginRequest) { r.Username = "locked" }, "user disabled", "disabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.req()
			tc.mod(r)
			_, err := e.agent.Login(ctx, r)
			wantCode(t, err, 401, adminapi.CodeUnauthorized, tc.msg)
			ev := e.audit("auth.login")[0]
			if ev.Outcome != "failure" || ev.Details["reason"] != tc.reason || ev.Actor != "user:"+r.Username {
				t.Errorf("audit %+v, want reason %q", ev, tc.reason)
			}
			if strings.Contains(e.Logs(), r.Password) {
				t.Error("password logged")
			}
		})
	}
	if n := len(must[[]adminapi.Device](t)(e.admin.ListDevices(ctx))); n != 0 {
		t.Errorf("%d devices after failed logins", n)
	}
	for _, tc := range []struct {
		mod func(*controlproto.LoginRequest)
		msg string
	}{
		{func(r *controlproto.LoginRequest) { r.Username = "" }, `"username"`},
		{func(r *controlproto.LoginRequest) { r.Password = "" }, `"password"`},
		{func(r *controlproto.LoginRequest) { r.TOTP = "" }, `"totp"`},
		{func(r *controlproto.LoginRequest) { r.PublicKey = wgkey.Public{} }, `"public_key"`},
		{func(r *controlproto.LoginRequest) { r.CSR = "" }, `"csr"`},
		{func(r *controlproto.LoginRequest) { r.Hostname = "a\x00b" }, `"hostname"`},
	} {
		r := e.req()
		tc.mod(r)
		_, err := e.agent.Login(ctx, r)
		wantCode(t, err, 400, adminapi.CodeInvalid, tc.msg)
	}
}

func TestLoginThrottled(t *testing.T) {
	th := auth.NewThrottle(auth.ThrottleConfig{FreeUserAttempts: 2, BaseDelay: time.Minute})
	e := newLoginEnv(t, apitest.Options{Throttle: th})
	ctx := t.Context()
	for range 3 {
		r := e.req()
		r.Password = "wrong password!!"
		_, err := e.agent.Login(ctx, r)
		wantCode(t, err, 401, adminapi.CodeUnauthorized)
	}
	// Even the right password is refused while locked out.
	_, err := e.agent.Login(ctx, e.req())
	wantCode(t, err, 429, adminapi.CodeRateLimited, "try again")
	var ae *adminapi.Error
	if errors.As(err, &ae); ae.RetryAfter != time.Minute {
		t.Errorf("Retry-After = %v", ae.RetryAfter)
	}
	if ev := e.audit("auth.login")[0]; ev.Details["reason"] != "throttled" {
		t.Errorf("audit %+v", ev)
	}
	e.Advance(time.Minute)
	must[*controlproto.EnrollResponse](t)(e.agent.Login(ctx, e.req()))
}

func TestBodies(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		path, body string
		status     int
		msg        string
	}{
		{"/v1/segments", `{"name":"a","cidrs":["10.0.0.0/24"],"extra":1}`, 400, `unknown field "extra"`},
		{"/v1/segments", `{"name":"a","cidrs":"10.0.0.0/24"}`, 400, `field "cidrs": want a JSON array`},
		{"/v1/segments", `{"name":"a"`, 400, "truncated"},
		{"/v1/segments", `{"name":"a","cidrs":["10.0.0.0/24"]} {}`, 400, "more than one"},
		{"/v1/segments", ``, 400, "empty"},
		{"/v1/segments", `[1]`, 400, "JSON object"},
		{"/v1/segments", `{"name":"a","cidrs":["` + strings.Repeat("x", 2<<20) + `"]}`, 413, "larger than"},
		{"/v1/login", `{"username":"a","public_key":"nope"}`, 400, "public key"},
	} {
		st, body := e.raw("POST", tc.path, e.AdminToken, tc.body)
		var eb adminapi.ErrorBody
		if err := json.Unmarshal([]byte(body), &eb); err != nil {
			t.Fatalf("%s %.40s: body %q", tc.path, tc.body, body)
		}
		if st != tc.status || eb.Code != adminapi.CodeInvalid || !strings.Contains(eb.Error, tc.msg) {
			t.Errorf("%s %.60s = %d %+v, want %d %q", tc.path, tc.body, st, eb, tc.status, tc.msg)
		}
	}
	if st, body := e.raw("GET", "/v1/nothing", e.AdminToken, ""); st != 404 || !strings.Contains(body, `"not_found"`) {
		t.Errorf("unknown route = %d %s", st, body)
	}
	if st, _ := e.raw("PUT", "/v1/segments", e.AdminToken, "{}"); st != http.StatusMethodNotAllowed {
		t.Errorf("PUT = %d", st)
	}
}

func TestAuditList(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	setupSegment(t, e)
	must[*adminapi.Group](t)(e.admin.CreateGroup(ctx, &adminapi.CreateGroupRequest{Name: "g"}))
	all := must[[]adminapi.AuditEvent](t)(e.admin.ListAudit(ctx, adminapi.AuditQuery{}))
	if len(all) != 2 || all[0].Type != "admin.group.create" || all[0].Seq <= all[1].Seq {
		t.Fatalf("audit %+v", all)
	}
	seg := must[[]adminapi.AuditEvent](t)(e.admin.ListAudit(ctx, adminapi.AuditQuery{Type: "admin.segment.create"}))
	if len(seg) != 1 {
		t.Errorf("by type %+v", seg)
	}
	one := must[[]adminapi.AuditEvent](t)(e.admin.ListAudit(ctx, adminapi.AuditQuery{Limit: 1}))
	if len(one) != 1 {
		t.Errorf("limit 1: %+v", one)
	}
	after := must[[]adminapi.AuditEvent](t)(e.admin.ListAudit(ctx, adminapi.AuditQuery{After: all[1].Seq}))
	if len(after) != 1 || after[0].Seq != all[0].Seq {
		t.Errorf("after: %+v", after)
	}
	_, err := e.admin.ListAudit(ctx, adminapi.AuditQuery{Limit: 5000})
	wantCode(t, err, 400, adminapi.CodeInvalid, `"limit"`)
	st, _ := e.raw("GET", "/v1/audit?after=x", e.AdminToken, "")
	if st != 400 {
		t.Errorf("after=x: %d", st)
	}
}

func TestClientRejectsOtherCA(t *testing.T) {
	e := newEnv(t)
	other := apitest.New(t, apitest.Options{})
	c := must[*adminapi.Client](t)(adminapi.New(e.URL, e.AdminToken, other.CAPEM))
	_, err := c.ListSegments(t.Context())
	var ue *adminapi.UnreachableError
	if err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), "--ca-cert") {
		t.Fatalf("err = %v, want a certificate error", err)
	}
	for _, u := range []string{"http://127.0.0.1:1", "127.0.0.1:1", "https://"} {
		if _, err := adminapi.New(u, "", e.CAPEM); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
	if _, err := adminapi.New(e.URL, "", []byte("not pem")); err == nil {
		t.Error("bad CA accepted")
	}
	// Nothing listening: UnreachableError.
	e.HTTP.Close()
	_, err = e.admin.ListSegments(t.Context())
	if !errors.As(err, &ue) {
		t.Fatalf("closed server: %v (%T)", err, err)
	}
	_ = bytes.MinRead
}

// together runs f(0) … f(n-1) in n goroutines released at once, to race
// them, and returns their errors by index.
func together(n int, f func(i int) error) []error {
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = f(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// Fifty gateways racing to redeem one token over HTTPS: exactly one is
// enrolled, the rest are told the token is invalid, and nothing else is
// created.
func TestGatewayTokenSingleUseUnderConcurrency(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	setupSegment(t, e)
	tok := must[*adminapi.CreateGatewayTokenResponse](t)(e.admin.CreateGatewayToken(ctx, &adminapi.CreateGatewayTokenRequest{Segment: "clinical"}))
	const n = 50
	reqs := make([]*controlproto.EnrollGatewayRequest, n)
	for i := range reqs {
		reqs[i] = &controlproto.EnrollGatewayRequest{Token: tok.Token, PublicKey: wgPub(t), CSR: csr(t, "gw"), Endpoint: "gw.hospital.example:51820"}
	}
	errs := together(n, func(i int) error {
		_, err := e.agent.EnrollGateway(ctx, reqs[i])
		return err
	})
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case adminapi.IsCode(err, adminapi.CodeTokenInvalid):
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent redemptions succeeded, want exactly 1", ok, n)
	}
	if gws := must[[]adminapi.Gateway](t)(e.admin.ListGateways(ctx)); len(gws) != 1 {
		t.Fatalf("%d gateways enrolled, want 1", len(gws))
	}
}

// Creating an app whose DNS name is in none of the controller's zones
// warns which domain it makes internal; a name inside a zone does not.
func TestAppOutsideDNSZonesWarns(t *testing.T) {
	e := newEnv(t, apitest.Options{DNSZones: []string{"hospital.internal"}})
	ctx := t.Context()
	must[*adminapi.Segment](t)(e.admin.CreateSegment(ctx, &adminapi.CreateSegmentRequest{Name: "clinical", CIDRs: []string{"10.20.0.0/24"}}))
	in := must[*adminapi.App](t)(e.admin.CreateApp(ctx, &adminapi.CreateAppRequest{Name: "ehr", Segment: "clinical", DNSName: "ehr.hospital.internal", Address: "10.20.0.5", Proto: "tcp", Ports: []string{"443"}}))
	if len(in.Warnings) != 0 {
		t.Errorf("an app inside a zone got warnings %q", in.Warnings)
	}
	out := must[*adminapi.App](t)(e.admin.CreateApp(ctx, &adminapi.CreateAppRequest{Name: "lis", Segment: "clinical", DNSName: "lis.lab.example", Address: "10.20.0.6", Proto: "tcp", Ports: []string{"443"}}))
	if len(out.Warnings) != 1 || !strings.Contains(out.Warnings[0], "every name under lab.example") || !strings.Contains(out.Warnings[0], "hospital.internal") {
		t.Errorf("an app outside every zone: warnings %q", out.Warnings)
	}
	if got := must[*adminapi.App](t)(e.admin.GetApp(ctx, "lis")); len(got.Warnings) != 0 {
		t.Errorf("warnings are for the create's answer only, GetApp has %q", got.Warnings)
	}
}

// 'session list' shows the latest activity the gateways reported, which
// the store learns only when a session nears its idle limit.
func TestSessionListShowsReportedActivity(t *testing.T) {
	e := newLoginEnv(t)
	ctx := t.Context()
	resp := must[*controlproto.EnrollResponse](t)(e.agent.Login(ctx, e.req()))
	list := func() adminapi.Session {
		t.Helper()
		ss := must[[]adminapi.Session](t)(e.admin.ListSessions(ctx, adminapi.SessionQuery{User: "nurse"}))
		if len(ss) != 1 {
			t.Fatalf("%d active sessions, want 1", len(ss))
		}
		return ss[0]
	}
	s := list()
	if !s.LastActivity.Equal(s.StartedAt) {
		t.Fatalf("before any traffic: last activity %s, started %s", s.LastActivity, s.StartedAt)
	}
	at := s.StartedAt.Add(7 * time.Minute)
	e.Sessions.Touch(resp.ID, at)
	if got := list().LastActivity; !got.Equal(at) {
		t.Fatalf("after a gateway reported traffic at %s: last activity %s", at, got)
	}
	e.Sessions.Touch(resp.ID, s.StartedAt.Add(-time.Minute)) // older than the store's: ignored
	if got := list().LastActivity; !got.Equal(at) {
		t.Fatalf("an older report moved last activity to %s", got)
	}
}

// Disabling a user pushes new maps, refuses sign-in and is audited;
// enabling restores it. Devices stay enrolled throughout.
func TestUserDisableEnable(t *testing.T) {
	e := newLoginEnv(t)
	ctx := t.Context()
	must[*controlproto.EnrollResponse](t)(e.agent.Login(ctx, e.req()))

	before := e.Changed()
	u := must[*adminapi.User](t)(e.admin.SetUserDisabled(ctx, "nurse", true))
	if !u.Disabled || e.Changed() != before+1 {
		t.Fatalf("disable: %+v, Changed %d→%d", u, before, e.Changed())
	}
	// Disabling ended the session (in the store's transaction) and
	// audited it.
	if act := must[[]adminapi.Session](t)(e.admin.ListSessions(ctx, adminapi.SessionQuery{User: "nurse"})); len(act) != 0 {
		t.Fatalf("active sessions of a disabled user: %+v", act)
	}
	all := must[[]adminapi.Session](t)(e.admin.ListSessions(ctx, adminapi.SessionQuery{User: "nurse", All: true}))
	if len(all) != 1 || all[0].EndReason != store.EndUserDisabled {
		t.Fatalf("sessions after disable: %+v", all)
	}
	if evs := e.audit("session.end"); len(evs) != 1 || evs[0].Subject != all[0].ID {
		t.Fatalf("session.end audit: %+v", evs)
	}
	e.Advance(31 * time.Second) // a fresh TOTP step
	_, err := e.agent.Login(ctx, e.req())
	wantCode(t, err, 401, adminapi.CodeUnauthorized)
	if devs := must[[]adminapi.Device](t)(e.admin.ListDevices(ctx)); len(devs) != 1 {
		t.Fatalf("disable removed devices: %+v", devs)
	}

	must[*adminapi.User](t)(e.admin.SetUserDisabled(ctx, "nurse", false))
	e.Advance(31 * time.Second)
	must[*controlproto.EnrollResponse](t)(e.agent.Login(ctx, e.req()))

	_, err = e.admin.SetUserDisabled(ctx, "nobody", true)
	wantCode(t, err, 404, adminapi.CodeNotFound)
	evs := must[[]adminapi.AuditEvent](t)(e.admin.ListAudit(ctx, adminapi.AuditQuery{Type: "admin.user."}))
	seen := map[audit.Type]bool{}
	for _, ev := range evs {
		seen[ev.Type] = true
	}
	if !seen["admin.user.disable"] || !seen["admin.user.enable"] {
		t.Fatalf("audit lacks disable/enable: %+v", evs)
	}
}

// A device signs out with its certificate; without one (or with an admin
// token only) the route refuses.
func TestLogoutNeedsDeviceCertificate(t *testing.T) {
	e := newEnv(t)
	_, err := e.agent.Logout(t.Context())
	wantCode(t, err, http.StatusUnauthorized, adminapi.CodeUnauthorized, "certificate")
	_, err = e.admin.Logout(t.Context())
	wantCode(t, err, http.StatusUnauthorized, adminapi.CodeUnauthorized, "certificate")
}
