package audit

import "testing"

func TestKeysOf(t *testing.T) {
	for _, tc := range []struct {
		t              Type
		actor, subject string
		details        map[string]string
		want           Keys
	}{
		{FlowAllow, "gateway:gw-1", "ehr", map[string]string{"user": "nurse", "device": "dev-1"}, Keys{"nurse", "dev-1", "ehr"}},
		{FlowDeny, "gateway:gw-1", "10.20.0.5:443", map[string]string{"user": "nurse", "app": "pacs"}, Keys{"nurse", "", "pacs"}},
		{SessionStart, "user:doc", "sess-1", map[string]string{"device": "dev-2"}, Keys{"doc", "dev-2", ""}},
		{AuthLogin, "user:unknown", `"bad name"`, map[string]string{"source": "10.1.2.3"}, Keys{"unknown", "", ""}},
		{AdminUserDisable, "admin:alice", "nurse", nil, Keys{"nurse", "", ""}},
		{AdminDeviceRevoke, "admin:alice", "dev-3", nil, Keys{"", "dev-3", ""}},
		{PostureReport, "device:dev-4", "dev-4", nil, Keys{"", "dev-4", ""}},
		{CertRenew, "gateway:gw-1", "gw-1", map[string]string{"kind": "gateway"}, Keys{}},
		{CertRenew, "device:dev-5", "dev-5", map[string]string{"kind": "client"}, Keys{"", "dev-5", ""}},
		{AdminAppCreate, "admin:alice", "ehr", map[string]string{"segment": "clinical"}, Keys{"", "", "ehr"}},
		{AdminRuleCreate, "admin:alice", "r1", map[string]string{"group": "nurses", "app": "ehr"}, Keys{"", "", "ehr"}},
		{AdminGroupAddMember, "admin:alice", "nurses", map[string]string{"user": "nurse"}, Keys{"nurse", "", ""}},
		{DNSDeny, "gateway:gw-1", "pacs.hosp.internal", map[string]string{"user": "nurse", "device": "dev-1"}, Keys{"nurse", "dev-1", ""}},
		{AdminSegmentCreate, "admin:alice", "clinical", nil, Keys{}},
	} {
		if got := KeysOf(tc.t, tc.actor, tc.subject, tc.details); got != tc.want {
			t.Errorf("%s %s %s %v: %+v, want %+v", tc.t, tc.actor, tc.subject, tc.details, got, tc.want)
		}
	}
}
