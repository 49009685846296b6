package api

// Policy routes: plan, apply, history and rollback of the policy file
// (pkg/policy/policyfile). The controller is the only parser of applied
// policy; a policy is stored only after it parses, checks and passes every
// one of its tests, and every stored version is audited with its actor,
// reason and the SHA-256 of the old and new text.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cordonhq/cordon/controller/internal/netmap"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/policy/policyfile"
)

// maxReasonLen bounds the reason of an apply or rollback.
const maxReasonLen = 1000

// defaultPolicyFile names a policy sent without a file name in errors.
const defaultPolicyFile = "policy.yaml"

// decodePolicy is decode with the larger body limit of the policy routes.
func decodePolicy(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return invalidf("Content-Type must be application/json")
	}
	return decodeBody(http.MaxBytesReader(w, r.Body, adminapi.MaxPolicyBodySize), v)
}

// checkPolicyFileName keeps the name shown in error positions printable.
func checkPolicyFileName(name string) (string, error) {
	if name == "" {
		return defaultPolicyFile, nil
	}
	if len(name) > 255 || !utf8.ValidString(name) || strings.ContainsAny(name, "\x00\r\n") {
		return "", invalidf("field \"file\": at most 255 bytes of UTF-8 on one line")
	}
	return name, nil
}

func checkReason(reason string) (string, error) {
	reason = strings.TrimSpace(reason)
	switch {
	case reason == "":
		return "", invalidf("field \"reason\": required: say why the policy changes (it goes to the audit trail)")
	case len(reason) > maxReasonLen || !utf8.ValidString(reason):
		return "", invalidf("field \"reason\": at most %d bytes of UTF-8", maxReasonLen)
	}
	return reason, nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// validated is the outcome of validating a policy file.
type validated struct {
	pol      *policyfile.Policy // nil unless valid
	problems []adminapi.PolicyProblem
	tests    []adminapi.PolicyTestResult
}

func (v *validated) message(file string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "policy %s refused", file)
	var failed int
	for _, t := range v.tests {
		if !t.Passed {
			failed++
		}
	}
	if len(v.problems) > 0 {
		fmt.Fprintf(&b, ": %d problem(s)", len(v.problems))
	} else {
		fmt.Fprintf(&b, ": %d test(s) failed", failed)
	}
	for _, p := range v.problems {
		if p.Line > 0 {
			fmt.Fprintf(&b, "\n%s:%d:%d: %s", p.File, p.Line, p.Col, p.Message)
		} else {
			fmt.Fprintf(&b, "\n%s", p.Message)
		}
	}
	for _, t := range v.tests {
		if !t.Passed {
			fmt.Fprintf(&b, "\n%s", t.Message)
		}
	}
	return b.String()
}

// validatePolicy parses, checks and tests src. Problems with the file are
// in the result, not the error.
func validatePolicy(file string, src []byte) *validated {
	out := &validated{problems: []adminapi.PolicyProblem{}, tests: []adminapi.PolicyTestResult{}}
	pol, res, err := policyfile.Validate(file, src)
	for _, r := range res {
		out.tests = append(out.tests, adminapi.PolicyTestResult{
			Name: r.Test.Name, Line: r.Test.Pos.Line, Col: r.Test.Pos.Col, Passed: r.Passed, Message: r.Msg,
		})
	}
	var list policyfile.ErrorList
	var verr *policyfile.ValidationError
	switch {
	case err == nil:
		out.pol = pol
	case errors.As(err, &list):
		for _, e := range list {
			out.problems = append(out.problems, adminapi.PolicyProblem{File: e.File, Line: e.Pos.Line, Col: e.Pos.Col, Message: e.Msg})
		}
	case errors.As(err, &verr):
		// the failed tests are in out.tests
	default:
		out.problems = append(out.problems, adminapi.PolicyProblem{File: file, Message: err.Error()})
	}
	return out
}

// activePolicy returns the active version and its parsed policy; with no
// active version, version 0 and the directory as a policy (netmap.Export),
// so a plan of the first policy file shows what changes against the
// access the directory grants now.
func (a *API) activePolicy(ctx context.Context) (store.PolicyVersion, *policyfile.Policy, error) {
	v, err := a.st.ActivePolicy(ctx)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return v, nil, err
	}
	if err != nil {
		snap, err := a.st.Snapshot(ctx)
		if err != nil {
			return v, nil, err
		}
		if src, err := netmap.Export(snap, a.now()); err == nil {
			if pol, err := policyfile.Parse(netmap.ExportFile, src); err == nil {
				return v, pol, nil
			}
		} else {
			a.log.WarnContext(ctx, "the directory cannot be exported as a policy; diffing against an empty policy", logErr, err)
		}
	} else {
		pol, err := policyfile.Parse(v.File, v.Source)
		if err == nil {
			return v, pol, nil
		}
		// It parsed when it was applied; only a newer, stricter reader
		// refuses it now. Plans then diff against nothing, and an apply
		// must still be possible to replace it.
		a.log.WarnContext(ctx, "active policy no longer parses; diffing against an empty policy", "version", v.Version, logErr, err)
	}
	pol, err := policyfile.Parse("empty", []byte("version: 1\n"))
	return v, pol, err
}

func changesOut(cs []policyfile.Change) []adminapi.PolicyChange {
	out := make([]adminapi.PolicyChange, len(cs))
	for i, c := range cs {
		out[i] = adminapi.PolicyChange{Kind: c.Kind, Who: c.Who, App: c.App, Old: c.Old, New: c.New}
	}
	return out
}

func policyVersionOut(v store.PolicyVersion) adminapi.PolicyVersion {
	return adminapi.PolicyVersion{
		Version: v.Version, File: v.File, SHA256: v.SHA256, Actor: v.Actor, Reason: v.Reason,
		RollbackOf: v.RollbackOf, CreatedAt: v.CreatedAt, Source: string(v.Source),
	}
}

func (a *API) planPolicy(w http.ResponseWriter, r *http.Request, _ string) error {
	var req adminapi.PlanPolicyRequest
	if err := decodePolicy(w, r, &req); err != nil {
		return err
	}
	file, err := checkPolicyFileName(req.File)
	if err != nil {
		return err
	}
	src := []byte(req.Source)
	v := validatePolicy(file, src)
	plan := adminapi.PolicyPlan{
		Valid: v.pol != nil, SHA256: sha256Hex(src), Errors: v.problems, Tests: v.tests,
		Changes: []adminapi.PolicyChange{},
	}
	active, old, err := a.activePolicy(r.Context())
	if err != nil {
		return err
	}
	plan.ActiveVersion, plan.ActiveSHA256 = active.Version, active.SHA256
	if v.pol != nil {
		plan.Changes = changesOut(policyfile.Diff(old, v.pol))
	}
	return ok(w, plan)
}

func (a *API) applyPolicy(w http.ResponseWriter, r *http.Request, actor string) error {
	var req adminapi.ApplyPolicyRequest
	if err := decodePolicy(w, r, &req); err != nil {
		return err
	}
	file, err := checkPolicyFileName(req.File)
	if err != nil {
		return err
	}
	reason, err := checkReason(req.Reason)
	if err != nil {
		return err
	}
	return a.storePolicy(w, r, actor, audit.AdminPolicyApply, store.PolicyVersion{File: file, Source: []byte(req.Source), Reason: reason})
}

func (a *API) rollbackPolicy(w http.ResponseWriter, r *http.Request, actor string) error {
	var req adminapi.RollbackPolicyRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Version <= 0 {
		return invalidf("field \"version\": required: a version number from cordonctl policy history")
	}
	reason, err := checkReason(req.Reason)
	if err != nil {
		return err
	}
	old, err := a.st.GetPolicyVersion(r.Context(), req.Version)
	if errors.Is(err, store.ErrNotFound) {
		return notFoundf("policy version %d not found (cordonctl policy history lists them)", req.Version)
	}
	if err != nil {
		return err
	}
	return a.storePolicy(w, r, actor, audit.AdminPolicyRollback, store.PolicyVersion{
		File: old.File, Source: old.Source, Reason: reason, RollbackOf: old.Version,
	})
}

// storePolicy validates nv and stores it as the new active version, then
// records it as typ (admin.policy.apply or .rollback), in one transaction.
// A refused policy is recorded as a failure and changes nothing.
func (a *API) storePolicy(w http.ResponseWriter, r *http.Request, actor string, typ audit.Type, nv store.PolicyVersion) error {
	ctx := r.Context()
	newSHA := sha256Hex(nv.Source)
	active, old, err := a.activePolicy(ctx)
	if err != nil {
		return err
	}
	details := map[string]string{
		"reason": nv.Reason, "file": nv.File, "old_sha256": active.SHA256, "new_sha256": newSHA,
		"old_version": strconv.FormatInt(active.Version, 10),
	}
	if nv.RollbackOf != 0 {
		details["rollback_of"] = strconv.FormatInt(nv.RollbackOf, 10)
	}
	v := validatePolicy(nv.File, nv.Source)
	if v.pol == nil {
		details["problems"] = strconv.Itoa(len(v.problems))
		if err := a.state.Record(ctx, origin(r, actor), store.AuditEvent{Type: typ, Outcome: "failure",
			Subject: clip(nv.File), Details: details}); err != nil {
			return err
		}
		return invalidf("%s", v.message(nv.File))
	}
	stored, err := a.state.PutPolicy(ctx, origin(r, actor), typ, active.Version, nv, details)
	if err != nil {
		return err
	}
	stored.Source = nil
	passed := 0
	for _, t := range v.tests {
		if t.Passed {
			passed++
		}
	}
	return ok(w, adminapi.AppliedPolicy{
		Version: policyVersionOut(stored), PreviousSHA: active.SHA256,
		Changes: changesOut(policyfile.Diff(old, v.pol)), TestsPassed: passed,
	})
}

func (a *API) listPolicyVersions(w http.ResponseWriter, r *http.Request, _ string) error {
	vs, err := a.st.ListPolicyVersions(r.Context())
	if err != nil {
		return err
	}
	return ok(w, mapSlice(vs, policyVersionOut))
}

func (a *API) getPolicyVersion(w http.ResponseWriter, r *http.Request, _ string) error {
	s := r.PathValue("n")
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return invalidf("policy version %q: want a positive number", clip(s))
	}
	v, err := a.st.GetPolicyVersion(r.Context(), n)
	if errors.Is(err, store.ErrNotFound) {
		return notFoundf("policy version %d not found (cordonctl policy history lists them)", n)
	}
	if err != nil {
		return err
	}
	return ok(w, policyVersionOut(v))
}

// exportPolicy answers GET /v1/policy/export: the policy file that
// decides access now. With a policy applied that is the active version's
// text as applied; before that, the skeleton directory (segments, apps,
// groups, rules) rendered as a policy file that grants the same
// (netmap.Export), the starting point for moving to a file. The
// X-Cordon-Policy-Origin header repeats Origin for clients that only
// keep the body.
func (a *API) exportPolicy(w http.ResponseWriter, r *http.Request, _ string) error {
	snap, err := a.st.Snapshot(r.Context()) // one consistent read: the directory and the active policy
	if err != nil {
		return fmt.Errorf("read the directory: %w", err)
	}
	if v := snap.Policy; v != nil {
		w.Header().Set(adminapi.PolicyOriginHeader, adminapi.PolicyOriginPolicy)
		return ok(w, adminapi.PolicyExport{
			Origin: adminapi.PolicyOriginPolicy, Version: v.Version, File: v.File,
			SHA256: sha256Hex(v.Source), Source: string(v.Source),
		})
	}
	src, err := netmap.Export(snap, a.now())
	if err != nil {
		return conflictf("the directory cannot be exported as a policy file: %v", err)
	}
	w.Header().Set(adminapi.PolicyOriginHeader, adminapi.PolicyOriginDirectory)
	return ok(w, adminapi.PolicyExport{
		Origin: adminapi.PolicyOriginDirectory, File: netmap.ExportFile,
		SHA256: sha256Hex(src), Source: string(src),
	})
}
