package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/pkg/adminapi"
)

const polV1 = `version: 1
groups:
  staff: {members: [alice, bob]}
segments:
  lan: {prefixes: [10.20.0.0/24], gateways: [gw-1]}
apps:
  wiki: {segment: lan, addresses: [10.20.0.10], ports: [tcp/443], classification: internal}
rules:
  - {name: staff-wiki, from: [group:staff], to: [app:wiki]}
tests:
  - {name: alice reaches the wiki, user: alice, app: wiki, port: tcp/443, expect: allow}
`

// polV2 takes bob's access away.
const polV2 = `version: 1
groups:
  staff: {members: [alice, bob]}
segments:
  lan: {prefixes: [10.20.0.0/24], gateways: [gw-1]}
apps:
  wiki: {segment: lan, addresses: [10.20.0.10], ports: [tcp/443], classification: internal}
rules:
  - {name: staff-wiki, from: [group:staff], to: [app:wiki]}
deny:
  - {name: no-bob, from: [user:bob], to: [app:wiki]}
tests:
  - {name: bob never reaches the wiki, user: bob, app: wiki, port: tcp/443, expect: deny}
`

func TestPolicyPlanApplyRollback(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()

	plan := must[*adminapi.PolicyPlan](t)(e.admin.PlanPolicy(ctx, &adminapi.PlanPolicyRequest{File: "v1.yaml", Source: polV1}))
	if !plan.Valid || plan.ActiveVersion != 0 || len(plan.Tests) != 1 || !plan.Tests[0].Passed {
		t.Fatalf("plan of v1 = %+v; want valid, no active version, one passing test", plan)
	}
	if len(plan.Changes) != 2 || plan.Changes[0].Kind != "gain" || plan.Changes[0].Who != "user:alice" {
		t.Fatalf("plan of v1 changes = %+v; want alice and bob gain the wiki", plan.Changes)
	}

	_, err := e.admin.ApplyPolicy(ctx, &adminapi.ApplyPolicyRequest{File: "v1.yaml", Source: polV1})
	wantCode(t, err, http.StatusBadRequest, adminapi.CodeInvalid, "reason")

	before := e.Changed()
	v1 := must[*adminapi.AppliedPolicy](t)(e.admin.ApplyPolicy(ctx, &adminapi.ApplyPolicyRequest{File: "v1.yaml", Source: polV1, Reason: "CHG-1 initial"}))
	if v1.Version.Version != 1 || e.Changed() != before+1 {
		t.Fatalf("apply v1 = %+v, Changed %d→%d; want version 1 and one map push", v1, before, e.Changed())
	}

	plan = must[*adminapi.PolicyPlan](t)(e.admin.PlanPolicy(ctx, &adminapi.PlanPolicyRequest{File: "v2.yaml", Source: polV2}))
	if !plan.Valid || plan.ActiveVersion != 1 || len(plan.Changes) != 1 || plan.Changes[0].Kind != "lose" || plan.Changes[0].Who != "user:bob" {
		t.Fatalf("plan of v2 = %+v; want bob loses the wiki", plan)
	}
	v2 := must[*adminapi.AppliedPolicy](t)(e.admin.ApplyPolicy(ctx, &adminapi.ApplyPolicyRequest{File: "v2.yaml", Source: polV2, Reason: "CHG-2 bob left"}))
	if v2.Version.Version != 2 || v2.PreviousSHA != v1.Version.SHA256 {
		t.Fatalf("apply v2 = %+v; want version 2 after %s", v2, v1.Version.SHA256)
	}
	evs := e.audit("admin.policy.apply")
	if len(evs) != 2 || evs[0].Details["old_sha256"] != v1.Version.SHA256 || evs[0].Details["new_sha256"] != v2.Version.SHA256 ||
		evs[0].Details["reason"] != "CHG-2 bob left" || !strings.HasPrefix(evs[0].Actor, "admin:") {
		t.Fatalf("apply audit = %+v", evs)
	}

	rb := must[*adminapi.AppliedPolicy](t)(e.admin.RollbackPolicy(ctx, &adminapi.RollbackPolicyRequest{Version: 1, Reason: "CHG-3 undo"}))
	if rb.Version.Version != 3 || rb.Version.RollbackOf != 1 || rb.Version.SHA256 != v1.Version.SHA256 {
		t.Fatalf("rollback = %+v; want version 3 with v1's text", rb)
	}
	if len(e.audit("admin.policy.rollback")) != 1 {
		t.Fatal("rollback not audited")
	}
	vs := must[[]adminapi.PolicyVersion](t)(e.admin.ListPolicyVersions(ctx))
	if len(vs) != 3 || vs[2].Source != "" {
		t.Fatalf("versions = %+v; want 3 without source", vs)
	}
	got := must[*adminapi.PolicyVersion](t)(e.admin.GetPolicyVersion(ctx, 2))
	if got.Source != polV2 || got.Reason != "CHG-2 bob left" {
		t.Fatalf("version 2 = %+v", got)
	}
	_, err = e.admin.GetPolicyVersion(ctx, 9)
	wantCode(t, err, http.StatusNotFound, adminapi.CodeNotFound, "9")
	_, err = e.admin.RollbackPolicy(ctx, &adminapi.RollbackPolicyRequest{Version: 9, Reason: "x"})
	wantCode(t, err, http.StatusNotFound, adminapi.CodeNotFound, "9")
}

// Refused policies (syntax error, failing test) change nothing and say
// where the problem is.
func TestPolicyApplyRefused(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	bad := strings.Replace(polV1, "  staff: {members: [alice, bob]}", "  staff: {members: [alice, bob]", 1)
	plan := must[*adminapi.PolicyPlan](t)(e.admin.PlanPolicy(ctx, &adminapi.PlanPolicyRequest{File: "bad.yaml", Source: bad}))
	if plan.Valid || len(plan.Errors) == 0 || plan.Errors[0].Line == 0 {
		t.Fatalf("plan of a syntax error = %+v; want invalid with a line", plan)
	}
	_, err := e.admin.ApplyPolicy(ctx, &adminapi.ApplyPolicyRequest{File: "bad.yaml", Source: bad, Reason: "oops"})
	wantCode(t, err, http.StatusBadRequest, adminapi.CodeInvalid, "bad.yaml:3:3: YAML syntax error") // the line of the unclosed "{"

	failing := strings.Replace(polV1, "expect: allow", "expect: deny", 1)
	_, err = e.admin.ApplyPolicy(ctx, &adminapi.ApplyPolicyRequest{File: "f.yaml", Source: failing, Reason: "oops"})
	wantCode(t, err, http.StatusBadRequest, adminapi.CodeInvalid, "test(s) failed", "alice reaches the wiki")

	if vs := must[[]adminapi.PolicyVersion](t)(e.admin.ListPolicyVersions(ctx)); len(vs) != 0 || e.Changed() != 0 {
		t.Fatalf("refused applies stored %d versions, pushed %d maps", len(vs), e.Changed())
	}
	if evs := e.audit("admin.policy.apply"); len(evs) != 2 || evs[0].Outcome != "failure" {
		t.Fatalf("refusals audited as %+v; want two failures", evs)
	}

	// The policy routes take bodies over the 1 MiB limit of the others.
	big := polV1 + "# " + strings.Repeat("x", 2<<20) + "\n"
	plan = must[*adminapi.PolicyPlan](t)(e.admin.PlanPolicy(ctx, &adminapi.PlanPolicyRequest{Source: big}))
	if !plan.Valid {
		t.Fatalf("plan of a 2 MiB policy: %+v", plan.Errors)
	}
}

// Once a policy file is applied, one-by-one edits of what the file owns are
// refused with a pointer to the file workflow, instead of changing nothing
// silently; users (identities) stay editable.
func TestDirectoryEditsRefusedUnderPolicy(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	must[*adminapi.Segment](t)(e.admin.CreateSegment(ctx, &adminapi.CreateSegmentRequest{Name: "before", CIDRs: []string{"10.9.0.0/24"}}))
	must[*adminapi.AppliedPolicy](t)(e.admin.ApplyPolicy(ctx, &adminapi.ApplyPolicyRequest{File: "v1.yaml", Source: polV1, Reason: "CHG-1 initial"}))
	_, err := e.admin.CreateSegment(ctx, &adminapi.CreateSegmentRequest{Name: "after", CIDRs: []string{"10.8.0.0/24"}})
	wantCode(t, err, 409, adminapi.CodeConflict, "cordonctl policy apply")
	err = e.admin.DeleteSegment(ctx, "before")
	wantCode(t, err, 409, adminapi.CodeConflict, "policy version 1 is active")
	_, err = e.admin.CreateGroup(ctx, &adminapi.CreateGroupRequest{Name: "g"})
	wantCode(t, err, 409, adminapi.CodeConflict)
	// Reads answer from the file that decides access now, not from the
	// directory the maps ignore.
	if seg, err := e.admin.GetSegment(ctx, "lan"); err != nil || seg.Source != "policy version 1 (v1.yaml)" {
		t.Fatalf("segment show lan under a policy: %+v, %v", seg, err)
	}
	_, err = e.admin.GetSegment(ctx, "before")
	wantCode(t, err, 404, adminapi.CodeNotFound, "not in the active policy version 1 (v1.yaml)")
	if _, err := e.admin.CreateUser(ctx, &adminapi.CreateUserRequest{Name: "newhire", Password: "a long enough password"}); err != nil {
		t.Fatalf("user create refused under a policy: %v", err)
	}
}

// TestPolicyExport: before any apply the export is the directory as a
// policy file, which applies unchanged; after, it is the active version.
func TestPolicyExport(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()

	empty := must[*adminapi.PolicyExport](t)(e.admin.ExportPolicy(ctx))
	if empty.Origin != adminapi.PolicyOriginDirectory || empty.Version != 0 || !strings.HasPrefix(empty.Source, "#") {
		t.Fatalf("export of an empty directory = %+v; want origin directory", empty)
	}

	must[*adminapi.Segment](t)(e.admin.CreateSegment(ctx, &adminapi.CreateSegmentRequest{Name: "lan", CIDRs: []string{"10.20.0.0/24"}}))
	must[*adminapi.App](t)(e.admin.CreateApp(ctx, &adminapi.CreateAppRequest{Name: "ehr", Segment: "lan", DNSName: "ehr.h.internal", Address: "10.20.0.10", Proto: "tcp", Ports: []string{"443"}}))
	must[*adminapi.CreateUserResponse](t)(e.admin.CreateUser(ctx, &adminapi.CreateUserRequest{Name: "alice", Password: "correct horse battery"}))
	must[*adminapi.Group](t)(e.admin.CreateGroup(ctx, &adminapi.CreateGroupRequest{Name: "nurses"}))
	must[*adminapi.Group](t)(e.admin.AddMember(ctx, "nurses", "alice"))
	must[*adminapi.Rule](t)(e.admin.CreateRule(ctx, &adminapi.CreateRuleRequest{Name: "nurses-ehr", Group: "nurses", App: "ehr"}))

	dir := must[*adminapi.PolicyExport](t)(e.admin.ExportPolicy(ctx))
	for _, want := range []string{"nurses-ehr", "group:nurses", "members: [alice]", "ehr.h.internal", "tcp/443", "waiver: migrated from the cordonctl directory"} {
		if !strings.Contains(dir.Source, want) {
			t.Errorf("directory export lacks %q:\n%s", want, dir.Source)
		}
	}
	if dir.Origin != adminapi.PolicyOriginDirectory || dir.SHA256 == "" || dir.File == "" {
		t.Fatalf("directory export = %+v", dir)
	}

	plan := must[*adminapi.PolicyPlan](t)(e.admin.PlanPolicy(ctx, &adminapi.PlanPolicyRequest{File: dir.File, Source: dir.Source}))
	if !plan.Valid || len(plan.Changes) != 0 {
		t.Fatalf("plan of the export = %+v; want valid, no change against the directory", plan)
	}
	v1 := must[*adminapi.AppliedPolicy](t)(e.admin.ApplyPolicy(ctx, &adminapi.ApplyPolicyRequest{File: dir.File, Source: dir.Source, Reason: "CHG-7 move to a file"}))

	pol := must[*adminapi.PolicyExport](t)(e.admin.ExportPolicy(ctx))
	if pol.Origin != adminapi.PolicyOriginPolicy || pol.Version != v1.Version.Version || pol.Source != dir.Source || pol.SHA256 != v1.Version.SHA256 {
		t.Fatalf("export after apply = %+v; want version %d with the applied text", pol, v1.Version.Version)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.URL+"/v1/policy/export", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("export without a token: %d, want 401", resp.StatusCode)
	}
}
