package audit

import "strings"

// Keys are the people and things a record is about, as the audit search
// indexes them: which user, which device, which app. They are read from
// where each type puts them (docs/audit-events.md): the "user", "device"
// and "app" details first, then the actor ("user:NAME", "device:ID"),
// then the subject of the types whose subject is one. An empty key: the
// record names none.
type Keys struct {
	User   string
	Device string
	App    string
}

// KeysOf returns the search keys of a record. It only reads; the record
// and what the audit log hashes stay as they are.
func KeysOf(t Type, actor, subject string, details map[string]string) Keys {
	var k Keys
	k.User = details["user"]
	if k.User == "" {
		if name, ok := strings.CutPrefix(actor, "user:"); ok {
			k.User = name
		}
	}
	if k.User == "" {
		switch t {
		case AdminUserCreate, AdminUserEnable, AdminUserDisable, AdminUserDelete, AdminUserRecoveryCodes, AdminBreakGlassCreate,
			AuthLogin, AuthRecoveryCode, AuthIdPLink, AuthIdPGroups, AuthIdPRefresh, AuthIdPUnreachable:
			k.User = subject
		}
	}
	k.Device = details["device"]
	if k.Device == "" {
		if id, ok := strings.CutPrefix(actor, "device:"); ok {
			k.Device = id
		}
	}
	if k.Device == "" {
		switch t {
		case AdminDeviceDelete, AdminDeviceRevoke, AdminDeviceQuarantine, AdminDeviceRelease, EnrollDevice, PostureReport:
			k.Device = subject
		case CertRenew:
			if details["kind"] == "client" {
				k.Device = subject
			}
		}
	}
	k.App = details["app"]
	if k.App == "" {
		switch t {
		case FlowAllow, FlowDeny, FlowCut, AdminAppCreate, AdminAppDelete:
			k.App = subject
		}
	}
	return k
}
