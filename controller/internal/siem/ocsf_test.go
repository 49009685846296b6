package siem

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"golang.org/x/mod/sumdb/tlog"
)

// ocsfSchema is testdata/ocsf-1.3.0.json: for each class Cordon emits
// and each object it uses, every attribute the OCSF 1.3.0 schema defines
// (taken from github.com/ocsf/ocsf-schema at tag 1.3.0, profiles left
// out), with its requirement, type and enum.
type ocsfSchema struct {
	Version string                 `json:"version"`
	Classes map[string]schemaClass `json:"classes"`
	Objects map[string]schemaObj   `json:"objects"`
}

type schemaClass struct {
	Name        string                `json:"name"`
	CategoryUID int                   `json:"category_uid"`
	Attributes  map[string]schemaAttr `json:"attributes"`
}

type schemaObj struct {
	Attributes map[string]schemaAttr `json:"attributes"`
	AtLeastOne []string              `json:"at_least_one"`
	JustOne    []string              `json:"just_one"`
}

type schemaAttr struct {
	Requirement string `json:"requirement"`
	Type        string `json:"type"`
	Object      string `json:"object"`
	Array       bool   `json:"array"`
	Enum        []int  `json:"enum"`
}

func loadSchema(t testing.TB) *ocsfSchema {
	t.Helper()
	b, err := os.ReadFile("testdata/ocsf-1.3.0.json")
	if err != nil {
		t.Fatal(err)
	}
	var s ocsfSchema
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if s.Version != OCSFVersion {
		t.Fatalf("schema %s, events claim %s", s.Version, OCSFVersion)
	}
	return &s
}

// validate checks one event against its class: every required attribute
// present, no attribute the class does not define, every value of its
// attribute's type, enums in range, objects checked the same way (their
// required attributes and at-least-one constraints), type_uid =
// class_uid*100 + activity_id and the class's category.
func (s *ocsfSchema) validate(line []byte) error {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	var ev map[string]any
	if err := dec.Decode(&ev); err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	classUID, err := intOf(ev["class_uid"])
	if err != nil {
		return fmt.Errorf("class_uid: %w", err)
	}
	c, ok := s.Classes[fmt.Sprint(classUID)]
	if !ok {
		return fmt.Errorf("class_uid %d is not a class the schema file has", classUID)
	}
	if cat, _ := intOf(ev["category_uid"]); cat != c.CategoryUID {
		return fmt.Errorf("%s: category_uid %d, want %d", c.Name, cat, c.CategoryUID)
	}
	act, _ := intOf(ev["activity_id"])
	if tu, _ := intOf(ev["type_uid"]); tu != classUID*100+act {
		return fmt.Errorf("%s: type_uid %d, want %d", c.Name, tu, classUID*100+act)
	}
	if v, _ := ev["metadata"].(map[string]any); v == nil || v["version"] != s.Version {
		return fmt.Errorf("%s: metadata.version is not %s", c.Name, s.Version)
	}
	return s.checkAttrs(c.Name, c.Attributes, nil, nil, ev)
}

func (s *ocsfSchema) checkAttrs(where string, attrs map[string]schemaAttr, atLeastOne, justOne []string, v map[string]any) error {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		a, ok := attrs[k]
		if !ok {
			return fmt.Errorf("%s: attribute %q is not defined there", where, k)
		}
		if err := s.checkValue(where+"."+k, a, v[k]); err != nil {
			return err
		}
	}
	for k, a := range attrs {
		if a.Requirement == "required" {
			if _, ok := v[k]; !ok {
				return fmt.Errorf("%s: required attribute %q missing", where, k)
			}
		}
	}
	if len(atLeastOne) > 0 && !slices.ContainsFunc(atLeastOne, func(k string) bool { _, ok := v[k]; return ok }) {
		return fmt.Errorf("%s: needs at least one of %v", where, atLeastOne)
	}
	if len(justOne) > 0 {
		n := 0
		for _, k := range justOne {
			if _, ok := v[k]; ok {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%s: needs exactly one of %v", where, justOne)
		}
	}
	return nil
}

func (s *ocsfSchema) checkValue(where string, a schemaAttr, v any) error {
	if a.Array {
		arr, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s: want an array", where)
		}
		for i, x := range arr {
			if err := s.checkValue(fmt.Sprintf("%s[%d]", where, i), schemaAttr{Type: a.Type, Object: a.Object, Enum: a.Enum}, x); err != nil {
				return err
			}
		}
		return nil
	}
	switch a.Type {
	case "object_t":
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want an object", where)
		}
		if a.Object == "object" {
			return nil // free-form (unmapped)
		}
		o, ok := s.Objects[a.Object]
		if !ok {
			return fmt.Errorf("%s: object %q is not in the schema file", where, a.Object)
		}
		return s.checkAttrs(where, o.Attributes, o.AtLeastOne, o.JustOne, m)
	case "string_t", "ip_t", "hostname_t", "email_t", "url_t", "file_name_t", "subnet_t", "mac_t", "username_t", "uuid_t", "datetime_t", "resource_uid_t", "file_hash_t", "process_name_t":
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s: want a string", where)
		}
		if a.Type == "ip_t" && !strings.ContainsAny(s, ".:") {
			return fmt.Errorf("%s: %q is not an IP address", where, s)
		}
	case "integer_t", "long_t", "timestamp_t", "port_t":
		n, err := intOf(v)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if a.Type == "port_t" && (n < 0 || n > 65535) {
			return fmt.Errorf("%s: port %d", where, n)
		}
		if len(a.Enum) > 0 && !slices.Contains(a.Enum, n) {
			return fmt.Errorf("%s: %d is not in the enum %v", where, n, a.Enum)
		}
	case "boolean_t":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s: want a boolean", where)
		}
	case "float_t":
		if _, err := v.(json.Number).Float64(); err != nil {
			return fmt.Errorf("%s: want a number", where)
		}
	case "json_t":
	default:
		return fmt.Errorf("%s: the test does not know type %s", where, a.Type)
	}
	return nil
}

func intOf(v any) (int, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("want an integer, got %T", v)
	}
	i, err := n.Int64()
	if err != nil || i > math.MaxInt32*1000 || i < math.MinInt32 {
		if err == nil && i > 0 {
			return int(i), nil // a timestamp
		}
		return 0, fmt.Errorf("want an integer, got %s", n)
	}
	return int(i), nil
}

// TestOCSFEveryTypeValidates: one record of every registered type and
// outcome (and the flow types of part 2, and an unknown type) becomes an
// event that the OCSF 1.3.0 definition of its class accepts, in the
// class the mapping table in docs/audit.md names, and keeps the record:
// its seq, type and canonical line, whose hash is the leaf.
func TestOCSFEveryTypeValidates(t *testing.T) {
	s := loadSchema(t)
	wantClass := map[audit.Type]int{
		audit.AuthLogin: classAuthentication, audit.AdminLogin: classAuthentication, audit.SessionStart: classAuthentication,
		audit.SessionEnd: classAuthentication, audit.AdminUserCreate: classAccountChange, audit.AdminAdminDisable: classAccountChange,
		audit.AdminGroupAddMember: classGroupManagement, audit.AdminAppCreate: classAPIActivity, audit.AdminPolicyApply: classAPIActivity,
		audit.AdminAuth: classAPIActivity, audit.FlowAllow: classNetworkActivity, audit.FlowDeny: classNetworkActivity,
		"flow.start": classNetworkActivity, "flow.end": classNetworkActivity, audit.DNSDeny: classDNSActivity,
		audit.EnrollDevice: classEntityManagement, audit.PostureReport: classInventoryInfo, audit.AuthAlert: classDetectionFinding,
		audit.AuditLogInconsistent: classDetectionFinding, audit.AuditExportLag: classDetectionFinding,
	}
	seen := map[int]bool{}
	for _, r := range sampleRecords() {
		line := r.Canonical()
		leaf := tlog.RecordHash(line)
		b, err := appendOCSFRecord(nil, "cordon-audit/0123", r, line, leaf)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.validate(b); err != nil {
			t.Errorf("%s %s: %v\n%s", r.Type, r.Outcome, err, b)
			continue
		}
		var ev ocsfEvent
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatal(err)
		}
		seen[ev.ClassUID] = true
		if c, ok := wantClass[r.Type]; ok && ev.ClassUID != c {
			t.Errorf("%s: class %d, want %d", r.Type, ev.ClassUID, c)
		}
		if ev.Metadata.Sequence != r.Seq || ev.Metadata.EventCode != string(r.Type) || ev.Unmapped.Cordon.Seq != r.Seq {
			t.Errorf("%s: seq/type not kept: %+v", r.Type, ev.Metadata)
		}
		sum := sha256.Sum256(append([]byte{0}, ev.RawData...))
		if ev.RawData != string(line) || ev.Unmapped.Cordon.Leaf != tlog.Hash(sum).String() {
			t.Errorf("%s: raw_data and leaf do not match", r.Type)
		}
		if got, err := auditlog.ParseRecord([]byte(ev.RawData)); err != nil || got.Seq != r.Seq {
			t.Errorf("%s: raw_data does not parse as the canonical record: %v", r.Type, err)
		}
	}
	for c := range classNames {
		if c != classBase && !seen[c] {
			t.Errorf("class %d (%s) is never used", c, classNames[c])
		}
	}
}

// TestOCSFCheckpoint: a checkpoint is a valid Base Event carrying the
// signed note.
func TestOCSFCheckpoint(t *testing.T) {
	s := loadSchema(t)
	k, _ := auditlog.NewKey(bytes.Repeat([]byte{7}, auditlog.SeedSize))
	c, note, err := k.Sign(42, tlog.Hash{1}, t0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := appendOCSFCheckpoint(nil, c, note)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.validate(b); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	var ev ocsfEvent
	json.Unmarshal(b, &ev)
	cp := ev.Unmapped.Cordon.Checkpoint
	if cp == nil || cp.Size != 42 {
		t.Fatalf("checkpoint not kept: %s", b)
	}
	if _, err := auditlog.OpenCheckpoint([]byte(cp.Note), k.VerifierKey()); err != nil {
		t.Fatalf("note does not verify: %v", err)
	}
}

// TestOCSFValidatorRejects: the validator is not a rubber stamp.
func TestOCSFValidatorRejects(t *testing.T) {
	s := loadSchema(t)
	r := sampleRecords()[0]
	good, _ := appendOCSFRecord(nil, "o", r, r.Canonical(), tlog.Hash{})
	if err := s.validate(good); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(map[string]any){
		"no user":      func(m map[string]any) { delete(m, "user") },
		"unknown attr": func(m map[string]any) { m["cordon_seq"] = 1 },
		"bad activity": func(m map[string]any) { m["activity_id"] = 42 },
		"bad type_uid": func(m map[string]any) { m["type_uid"] = 1 },
		"no metadata":  func(m map[string]any) { delete(m, "metadata") },
		"empty user":   func(m map[string]any) { m["user"] = map[string]any{"type_id": 1} },
		"string time":  func(m map[string]any) { m["time"] = "now" },
		"no vendor_name": func(m map[string]any) {
			delete(m["metadata"].(map[string]any)["product"].(map[string]any), "vendor_name")
		},
	} {
		var m map[string]any
		json.Unmarshal(good, &m)
		edit(m)
		b, _ := json.Marshal(m)
		if err := s.validate(b); err == nil {
			t.Errorf("%s: accepted %s", name, b)
		}
	}
}
