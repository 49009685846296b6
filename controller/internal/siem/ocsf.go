package siem

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/auditlog"
	"golang.org/x/mod/sumdb/tlog"
)

// OCSF (Open Cybersecurity Schema Framework) events, one JSON object per
// line, schema version OCSFVersion. Each audit category goes to the class
// that describes it (docs/audit.md has the table and the reasons):
//
//	auth.login, admin.login, auth.recovery_code,     Authentication (3002): Logon
//	session.start / session.end                      Authentication (3002): Logon / Logoff
//	other authentication types                       Authentication (3002): Other
//	admin.user.*, admin.admin.*, auth.idp.link,      Account Change (3001)
//	admin.idp.bind
//	admin.group.*                                    Group Management (3006)
//	other admin.* and admin.auth                     API Activity (6003)
//	flow.*                                           Network Activity (4001)
//	dns.deny                                         DNS Activity (4003): Response, NXDomain
//	enroll.*, cert.renew                             Entity Management (3004)
//	posture.report                                   Device Inventory Info (5001)
//	types that raise alerts (auth.alert, auth.break_glass,
//	audit.log.inconsistent, audit.export.lag)        Detection Finding (2004)
//	a signed checkpoint                              Base Event (0)
//
// Every event keeps the record itself: metadata.sequence is its seq,
// metadata.event_code its type, metadata.uid "seq:N", raw_data its
// canonical line, and unmapped.cordon the seq, type, category, outcome,
// actor, subject, details and leaf hash; SHA-256 of 0x00 and raw_data is
// the leaf hash, which a checkpoint covers.

// OCSFVersion is the OCSF schema version the events follow.
const OCSFVersion = "1.3.0"

// OCSF class UIDs.
const (
	classBase             = 0
	classDetectionFinding = 2004
	classAccountChange    = 3001
	classAuthentication   = 3002
	classEntityManagement = 3004
	classGroupManagement  = 3006
	classNetworkActivity  = 4001
	classDNSActivity      = 4003
	classInventoryInfo    = 5001
	classAPIActivity      = 6003
)

var classNames = map[int]string{
	classBase: "Base Event", classDetectionFinding: "Detection Finding", classAccountChange: "Account Change",
	classAuthentication: "Authentication", classEntityManagement: "Entity Management", classGroupManagement: "Group Management",
	classNetworkActivity: "Network Activity", classDNSActivity: "DNS Activity", classInventoryInfo: "Device Inventory Info",
	classAPIActivity: "API Activity",
}

var categoryNames = map[int]string{0: "Uncategorized", 2: "Findings", 3: "Identity & Access Management", 4: "Network Activity",
	5: "Discovery", 6: "Application Activity"}

// ocsfEvent is the union of the attributes Cordon sets; each class uses
// those its definition has (the test checks every event against the
// schema in testdata).
type ocsfEvent struct {
	ActivityID   int    `json:"activity_id"`
	ActivityName string `json:"activity_name,omitempty"`
	CategoryUID  int    `json:"category_uid"`
	CategoryName string `json:"category_name"`
	ClassUID     int    `json:"class_uid"`
	ClassName    string `json:"class_name"`
	TypeUID      int    `json:"type_uid"`
	SeverityID   int    `json:"severity_id"`
	Severity     string `json:"severity"`
	Time         int64  `json:"time"` // ms since the epoch
	StatusID     int    `json:"status_id,omitempty"`
	Status       string `json:"status,omitempty"`
	StatusDetail string `json:"status_detail,omitempty"`
	Message      string `json:"message,omitempty"`

	Metadata ocsfMetadata `json:"metadata"`

	Actor       *ocsfActor      `json:"actor,omitempty"`
	User        *ocsfUser       `json:"user,omitempty"`
	Group       *ocsfGroup      `json:"group,omitempty"`
	API         *ocsfAPI        `json:"api,omitempty"`
	Resources   []ocsfResource  `json:"resources,omitempty"`
	SrcEndpoint *ocsfEndpoint   `json:"src_endpoint,omitempty"`
	DstEndpoint *ocsfEndpoint   `json:"dst_endpoint,omitempty"`
	Connection  *ocsfConnection `json:"connection_info,omitempty"`
	Session     *ocsfSession    `json:"session,omitempty"`
	IsMFA       *bool           `json:"is_mfa,omitempty"`
	Entity      *ocsfEntity     `json:"entity,omitempty"`
	Device      *ocsfDevice     `json:"device,omitempty"`
	Query       *ocsfQuery      `json:"query,omitempty"`
	RcodeID     int             `json:"rcode_id,omitempty"`
	Rcode       string          `json:"rcode,omitempty"`
	FindingInfo *ocsfFinding    `json:"finding_info,omitempty"`
	RawData     string          `json:"raw_data,omitempty"`
	Unmapped    ocsfUnmapped    `json:"unmapped"`
}

type ocsfMetadata struct {
	Version        string      `json:"version"`
	Product        ocsfProduct `json:"product"`
	LogName        string      `json:"log_name"`
	LogProvider    string      `json:"log_provider,omitempty"`
	UID            string      `json:"uid"`
	Sequence       int64       `json:"sequence"`
	EventCode      string      `json:"event_code"`
	CorrelationUID string      `json:"correlation_uid,omitempty"`
}

type ocsfProduct struct {
	Name       string `json:"name"`
	VendorName string `json:"vendor_name"`
}

type ocsfActor struct {
	User *ocsfUser `json:"user,omitempty"`
}

type ocsfUser struct {
	Name   string `json:"name,omitempty"`
	UID    string `json:"uid,omitempty"`
	TypeID int    `json:"type_id"`
	Type   string `json:"type,omitempty"`
}

type ocsfGroup struct {
	Name string `json:"name"`
}

type ocsfAPI struct {
	Operation string `json:"operation"`
}

type ocsfResource struct {
	Name string `json:"name"`
	Type string `json:"type,omitempty"`
}

type ocsfEndpoint struct {
	IP   string `json:"ip,omitempty"`
	Port int    `json:"port,omitempty"`
	Name string `json:"name,omitempty"`
	UID  string `json:"uid,omitempty"`
}

type ocsfConnection struct {
	ProtocolName string `json:"protocol_name,omitempty"`
	DirectionID  int    `json:"direction_id"`
}

type ocsfSession struct {
	UID string `json:"uid"`
}

type ocsfEntity struct {
	Name string `json:"name,omitempty"`
	UID  string `json:"uid,omitempty"`
	Type string `json:"type,omitempty"`
}

type ocsfDevice struct {
	UID      string `json:"uid"`
	Hostname string `json:"hostname,omitempty"`
	TypeID   int    `json:"type_id"`
	Type     string `json:"type,omitempty"`
}

type ocsfQuery struct {
	Hostname string `json:"hostname"`
}

type ocsfFinding struct {
	UID   string   `json:"uid"`
	Title string   `json:"title"`
	Types []string `json:"types,omitempty"`
	Desc  string   `json:"desc,omitempty"`
}

// ocsfUnmapped is the record as Cordon keeps it (unmapped.cordon).
type ocsfUnmapped struct {
	Cordon ocsfCordon `json:"cordon"`
}

type ocsfCordon struct {
	Seq        int64             `json:"seq,omitempty"`
	Type       string            `json:"type,omitempty"`
	Category   string            `json:"category,omitempty"`
	Outcome    string            `json:"outcome,omitempty"`
	Actor      string            `json:"actor,omitempty"`
	Subject    string            `json:"subject,omitempty"`
	Details    map[string]string `json:"details,omitempty"`
	Leaf       string            `json:"leaf,omitempty"`
	Checkpoint *ocsfCheckpoint   `json:"checkpoint,omitempty"`
}

type ocsfCheckpoint struct {
	Origin string `json:"origin"`
	Size   int64  `json:"size"`
	Root   string `json:"root"`
	Note   string `json:"note"`
}

var ocsfSeverity = map[audit.Severity]struct {
	id   int
	name string
}{
	audit.Info: {1, "Informational"}, audit.Notice: {2, "Low"}, audit.Warning: {3, "Medium"}, audit.Alert: {4, "High"},
}

// findingTitles are the finding_info.title of the alert types.
var findingTitles = map[audit.Type]string{
	audit.AuthAlert:            "Repeated failed sign-ins",
	audit.AuthBreakGlass:       "Break-glass emergency access used",
	audit.AuditLogInconsistent: "Audit log does not extend a signed checkpoint",
	audit.AuditExportLag:       "SIEM export behind the audit log",
}

// appendOCSFRecord appends record r as one OCSF event and a newline.
func appendOCSFRecord(b []byte, origin string, r auditlog.Record, canonical []byte, leaf tlog.Hash) ([]byte, error) {
	spec, _ := audit.Lookup(r.Type)
	sev := ocsfSeverity[severity(r)]
	e := ocsfEvent{
		SeverityID: sev.id, Severity: sev.name,
		Time: r.Time.UnixMilli(),
		Metadata: ocsfMetadata{Version: OCSFVersion, Product: ocsfProduct{Name: "Cordon", VendorName: "Cordon"},
			LogName: "audit", LogProvider: origin, UID: "seq:" + strconv.FormatInt(r.Seq, 10), Sequence: r.Seq,
			EventCode: string(r.Type), CorrelationUID: r.RequestID},
		RawData: string(canonical),
		Unmapped: ocsfUnmapped{Cordon: ocsfCordon{Seq: r.Seq, Type: string(r.Type), Category: string(spec.Category),
			Outcome: r.Outcome, Actor: r.Actor, Subject: r.Subject, Details: r.Details, Leaf: leaf.String()}},
		Message: string(r.Type) + " " + r.Outcome + ": " + r.Subject,
	}
	mapRecord(&e, r, spec)
	e.CategoryUID = e.ClassUID / 1000
	e.CategoryName = categoryNames[e.CategoryUID]
	e.ClassName = classNames[e.ClassUID]
	e.TypeUID = e.ClassUID*100 + e.ActivityID
	return appendJSONLine(b, &e)
}

// appendOCSFCheckpoint appends a signed checkpoint as a Base Event.
func appendOCSFCheckpoint(b []byte, c auditlog.Checkpoint, note []byte) ([]byte, error) {
	e := ocsfEvent{
		ActivityID: 99, ActivityName: "Checkpoint", CategoryName: categoryNames[0], ClassName: classNames[classBase], TypeUID: 99,
		SeverityID: 1, Severity: "Informational", Time: c.Time.UnixMilli(),
		Message: "audit log checkpoint: " + c.String(),
		Metadata: ocsfMetadata{Version: OCSFVersion, Product: ocsfProduct{Name: "Cordon", VendorName: "Cordon"},
			LogName: "audit", LogProvider: c.Origin, UID: "checkpoint:" + strconv.FormatInt(c.Size, 10), EventCode: MsgIDCheckpoint},
		Unmapped: ocsfUnmapped{Cordon: ocsfCordon{Type: MsgIDCheckpoint,
			Checkpoint: &ocsfCheckpoint{Origin: c.Origin, Size: c.Size, Root: c.Root.String(), Note: string(note)}}},
	}
	return appendJSONLine(b, &e)
}

func appendJSONLine(b []byte, e *ocsfEvent) ([]byte, error) {
	return append(appendOCSFEvent(b, e), '\n'), nil
}

// mapRecord sets the class, activity, status and class attributes.
func mapRecord(e *ocsfEvent, r auditlog.Record, spec audit.Spec) {
	d := r.Details
	t := string(r.Type)
	switch audit.Outcome(r.Outcome) {
	case audit.Success, audit.Allow:
		e.StatusID, e.Status = 1, "Success"
	case audit.Failure, audit.Deny, audit.Invalid:
		e.StatusID, e.Status = 2, "Failure"
	default:
		e.StatusID, e.Status = 99, r.Outcome
	}
	e.StatusDetail = d["reason"]
	actor := actorUser(r.Actor)
	switch {
	case isAlert(spec):
		e.ClassUID = classDetectionFinding
		e.ActivityID, e.ActivityName = 1, "Create"
		if audit.Outcome(r.Outcome) == audit.Success {
			e.ActivityID, e.ActivityName = 3, "Close" // an alert's all-clear
		}
		e.StatusID, e.Status = 0, ""
		title, ok := findingTitles[r.Type]
		if !ok {
			title = t
		}
		e.FindingInfo = &ocsfFinding{UID: "cordon-audit-" + strconv.FormatInt(r.Seq, 10), Title: title, Types: []string{t}, Desc: d["reason"]}
	case r.Type == audit.SessionStart || r.Type == audit.SessionEnd:
		e.ClassUID = classAuthentication
		e.ActivityID, e.ActivityName = 1, "Logon"
		user := strings.TrimPrefix(r.Actor, "user:")
		if r.Type == audit.SessionEnd {
			e.ActivityID, e.ActivityName = 2, "Logoff"
			user = d["user"]
		}
		e.User = &ocsfUser{Name: nonEmpty(user), TypeID: 1, Type: "User"}
		e.Session = &ocsfSession{UID: r.Subject}
		if m, ok := d["mfa"]; ok {
			v := m == "true"
			e.IsMFA = &v
		}
		e.SrcEndpoint = endpoint(d["source"])
	case r.Type == audit.AuthIdPLink || r.Type == audit.AdminIdPBind || strings.HasPrefix(t, "admin.user.") || strings.HasPrefix(t, "admin.admin."):
		e.ClassUID = classAccountChange
		e.ActivityID, e.ActivityName = verbActivity(t, map[string]int{"create": 1, "enable": 2, "disable": 5, "delete": 6, "link": 1})
		typeID, typeName := 1, "User"
		if strings.HasPrefix(t, "admin.admin.") || r.Type == audit.AdminIdPBind {
			typeID, typeName = 2, "Admin"
		}
		e.User = &ocsfUser{Name: nonEmpty(r.Subject), TypeID: typeID, Type: typeName}
		e.Actor = &ocsfActor{User: actor}
		e.SrcEndpoint = endpoint(d["source"])
	case strings.HasPrefix(t, "admin.group."):
		e.ClassUID = classGroupManagement
		e.ActivityID, e.ActivityName = verbActivity(t, map[string]int{"create": 6, "delete": 5, "add_member": 3, "remove_member": 4})
		e.Group = &ocsfGroup{Name: nonEmpty(r.Subject)}
		if u := d["user"]; u != "" {
			e.User = &ocsfUser{Name: u, TypeID: 1, Type: "User"}
		}
	case spec.Category == audit.Authentication:
		e.ClassUID = classAuthentication
		e.ActivityID, e.ActivityName = 99, "Other"
		switch r.Type {
		case audit.AuthLogin, audit.AdminLogin, audit.AuthRecoveryCode:
			e.ActivityID, e.ActivityName = 1, "Logon"
		}
		typeID, typeName := 1, "User"
		if strings.HasPrefix(t, "admin.") {
			typeID, typeName = 2, "Admin"
		}
		e.User = &ocsfUser{Name: nonEmpty(r.Subject), TypeID: typeID, Type: typeName}
		e.SrcEndpoint = endpoint(d["source"])
		if m := d["method"]; m != "" {
			v := strings.Contains(m, "totp") || strings.Contains(m, "recovery")
			e.IsMFA = &v
		}
	case spec.Category == audit.Flow || strings.HasPrefix(t, "flow.") || strings.HasPrefix(t, "dns."):
		e.SrcEndpoint = endpoint(d["src"])
		e.DstEndpoint = endpoint(d["dst"])
		if e.DstEndpoint.IP == "" {
			e.DstEndpoint = &ocsfEndpoint{Name: nonEmpty(r.Subject)}
		}
		if r.Type == audit.DNSDeny {
			e.ClassUID = classDNSActivity
			e.ActivityID, e.ActivityName = 2, "Response"
			e.Query = &ocsfQuery{Hostname: nonEmpty(r.Subject)}
			e.RcodeID, e.Rcode = 3, "NXDomain"
			break
		}
		e.ClassUID = classNetworkActivity
		e.Connection = &ocsfConnection{ProtocolName: d["proto"]}
		// By verb, so that flow types added later (part 2's start and
		// end) map without a change here.
		switch verb := t[strings.LastIndexByte(t, '.')+1:]; {
		case r.Type == audit.FlowAllow || verb == "start":
			e.ActivityID, e.ActivityName = 1, "Open"
		case r.Type == audit.FlowDeny:
			e.ActivityID, e.ActivityName = 5, "Refuse"
		case r.Type == audit.FlowCut:
			e.ActivityID, e.ActivityName = 3, "Reset"
		case verb == "end":
			e.ActivityID, e.ActivityName = 2, "Close"
		default:
			e.ActivityID, e.ActivityName = 6, "Traffic"
		}
	case spec.Category == audit.Device && r.Type == audit.PostureReport:
		e.ClassUID = classInventoryInfo
		e.ActivityID, e.ActivityName = 1, "Log"
		e.Device = &ocsfDevice{UID: nonEmpty(r.Subject), TypeID: 0, Type: "Unknown"}
	case spec.Category == audit.Device:
		e.ClassUID = classEntityManagement
		e.ActivityID, e.ActivityName = 6, "Enroll"
		if r.Type == audit.CertRenew {
			e.ActivityID, e.ActivityName = 3, "Update"
		}
		kind := "device"
		if r.Type == audit.EnrollGateway || d["kind"] == "gateway" {
			kind = "gateway"
		}
		e.Entity = &ocsfEntity{Name: nonEmpty(r.Subject), Type: kind}
		e.SrcEndpoint = endpoint(d["source"])
	default:
		// Administration and access: the admin API.
		e.ClassUID = classAPIActivity
		op := t
		if r.Type == audit.AdminAuth {
			op = r.Subject // "METHOD /path"
			method, _, _ := strings.Cut(r.Subject, " ")
			e.ActivityID, e.ActivityName = httpActivity(method)
		} else {
			e.ActivityID, e.ActivityName = verbActivity(t, map[string]int{"create": 1, "delete": 4, "revoke": 3, "apply": 3, "rollback": 3, "enable": 3, "disable": 3})
		}
		if actor == nil {
			actor = &ocsfUser{Name: "unknown", TypeID: 0}
		}
		e.Actor = &ocsfActor{User: actor}
		e.API = &ocsfAPI{Operation: nonEmpty(op)}
		e.SrcEndpoint = endpoint(d["source"])
		if e.SrcEndpoint.IP == "" {
			// The admin API does not record the address of a change it
			// made; OCSF wants an endpoint, so it is named as unknown.
			e.SrcEndpoint = &ocsfEndpoint{Name: "unknown"}
		}
		if r.Type != audit.AdminAuth {
			parts := strings.Split(t, ".")
			kind := ""
			if len(parts) == 3 {
				kind = parts[1]
			}
			e.Resources = []ocsfResource{{Name: nonEmpty(r.Subject), Type: kind}}
		}
	}
	if e.SrcEndpoint != nil && e.SrcEndpoint.IP == "" && e.SrcEndpoint.Name == "" && e.SrcEndpoint.UID == "" {
		e.SrcEndpoint = nil
	}
}

// isAlert says whether the type raises alerts (an outcome "alert"): those
// are findings.
func isAlert(spec audit.Spec) bool {
	_, ok := spec.Severity(audit.Raised)
	return ok
}

// verbActivity maps the last part of an admin.<resource>.<verb> (or
// other) type to an activity; 99 Other if it has none.
func verbActivity(t string, ids map[string]int) (int, string) {
	verb := t[strings.LastIndexByte(t, '.')+1:]
	if id, ok := ids[verb]; ok {
		return id, activityCaption(verb)
	}
	return 99, "Other"
}

func activityCaption(verb string) string {
	switch verb {
	case "add_member":
		return "Add User"
	case "remove_member":
		return "Remove User"
	case "revoke", "apply", "rollback":
		return "Update"
	case "link":
		return "Create"
	}
	return strings.ToUpper(verb[:1]) + verb[1:]
}

func httpActivity(method string) (int, string) {
	switch method {
	case "POST":
		return 1, "Create"
	case "GET", "HEAD":
		return 2, "Read"
	case "PUT", "PATCH":
		return 3, "Update"
	case "DELETE":
		return 4, "Delete"
	}
	return 99, "Other"
}

// actorUser is the OCSF user of an actor "admin:NAME", "user:NAME",
// "controller" ...; nil for none.
func actorUser(actor string) *ocsfUser {
	kind, name, ok := strings.Cut(actor, ":")
	switch {
	case actor == "":
		return nil
	case !ok:
		return &ocsfUser{Name: actor, TypeID: 3, Type: "System"}
	case kind == "admin":
		return &ocsfUser{Name: nonEmpty(name), TypeID: 2, Type: "Admin"}
	case kind == "user":
		return &ocsfUser{Name: nonEmpty(name), TypeID: 1, Type: "User"}
	}
	return &ocsfUser{Name: actor, TypeID: 3, Type: "System"}
}

// endpoint parses "addr", "addr:port" or "[v6]:port"; an empty endpoint
// for anything else.
func endpoint(s string) *ocsfEndpoint {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return &ocsfEndpoint{IP: ap.Addr().Unmap().String(), Port: int(ap.Port())}
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return &ocsfEndpoint{IP: a.Unmap().String()}
	}
	return &ocsfEndpoint{}
}

func nonEmpty(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
