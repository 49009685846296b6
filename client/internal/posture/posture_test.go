package posture

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/nftables"

	"github.com/cordonhq/cordon/internal/netnstest"
	"github.com/cordonhq/cordon/pkg/posture"
)

const osRel = `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
ID=debian
`

func mountinfo(dev, fstype string) string {
	return "22 1 0:21 / /proc rw,nosuid - proc proc rw\n" +
		"25 1 " + dev + " / / rw,relatime shared:1 - " + fstype + " /dev/x rw\n" +
		"30 25 8:2 / /boot rw - ext4 /dev/sda2 rw\n"
}

func collector(files fstest.MapFS) *Collector {
	return &Collector{
		root:     files,
		kernel:   func() string { return "6.1.0-26-amd64" },
		firewall: func() posture.Check { return posture.Check{State: posture.No} },
		screen:   func(context.Context) posture.Check { return posture.Check{State: posture.Unknown, Detail: "test"} },
		version:  "test",
		now:      func() time.Time { return time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC) },
	}
}

func TestRootEncryption(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files fstest.MapFS
		want  posture.State
	}{
		{"LVM on LUKS", fstest.MapFS{
			"proc/self/mountinfo":             {Data: []byte(mountinfo("253:1", "ext4"))},
			"sys/dev/block/253:1/dm/uuid":     {Data: []byte("LVM-abc\n")},
			"sys/dev/block/253:1/slaves/dm-0": {Data: nil},
			"sys/class/block/dm-0/dm/uuid":    {Data: []byte("CRYPT-LUKS2-0123-luks\n")},
			"sys/class/block/dm-0/dm/name":    {Data: []byte("luks-root\n")},
		}, posture.Yes},
		{"plain partition", fstest.MapFS{
			"proc/self/mountinfo":   {Data: []byte(mountinfo("8:1", "ext4"))},
			"sys/dev/block/8:1/dev": {Data: []byte("8:1\n")},
		}, posture.No},
		{"LVM without crypt", fstest.MapFS{
			"proc/self/mountinfo":             {Data: []byte(mountinfo("253:1", "xfs"))},
			"sys/dev/block/253:1/dm/uuid":     {Data: []byte("LVM-abc\n")},
			"sys/dev/block/253:1/slaves/sda3": {Data: nil},
			"sys/class/block/sda3/dev":        {Data: []byte("8:3\n")},
		}, posture.No},
		{"container overlay root", fstest.MapFS{
			"proc/self/mountinfo": {Data: []byte(mountinfo("0:45", "overlay"))},
		}, posture.Unknown},
		{"no mount table", fstest.MapFS{}, posture.Unknown},
		{"garbage mount table", fstest.MapFS{
			"proc/self/mountinfo": {Data: []byte("- - -\n\x00\n/ / / / /\n")},
		}, posture.Unknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rootEncryption(tc.files)
			if c.State != tc.want || c.Detail == "" {
				t.Fatalf("got %+v, want state %s with a detail", c, tc.want)
			}
		})
	}
}

func TestCollectProducesAValidReport(t *testing.T) {
	c := collector(fstest.MapFS{
		"etc/os-release":      {Data: []byte(osRel)},
		"proc/self/mountinfo": {Data: []byte(mountinfo("8:1", "ext4"))},
	})
	r := c.Collect(context.Background())
	if r.OS != "debian" || r.OSVersion != "12" || r.OSName != "Debian GNU/Linux 12 (bookworm)" || r.Kernel != "6.1.0-26-amd64" {
		t.Fatalf("report %+v", r)
	}
	if r.ScreenLock.State != posture.Unknown {
		t.Fatalf("screen lock %+v, want unknown", r.ScreenLock)
	}
	b, _ := json.Marshal(r)
	if _, err := posture.Decode(strings.NewReader(string(b)), c.now()); err != nil {
		t.Fatalf("the controller would reject this report: %v", err)
	}
}

func TestCollectOnThisMachine(t *testing.T) {
	r := New("test").Collect(context.Background())
	if err := r.Validate(time.Now()); err != nil {
		t.Fatalf("this machine's report is invalid: %v (%+v)", err, r)
	}
	if r.Kernel == "" {
		t.Fatal("no kernel version")
	}
	t.Logf("this machine: %+v", r)
}

func TestNFTablesFirewall(t *testing.T) {
	ns := netnstest.Enter(t, "creates a network namespace to install a firewall in")
	if c := NFTablesFirewall(); c.State != posture.No {
		t.Fatalf("empty ruleset: %+v, want no", c)
	}
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	tbl := conn.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "filter"})
	drop := nftables.ChainPolicyDrop
	conn.AddChain(&nftables.Chain{Name: "input", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &drop})
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	if c := NFTablesFirewall(); c.State != posture.Yes || !strings.Contains(c.Detail, "filter/input") {
		t.Fatalf("input chain with drop policy: %+v, want yes", c)
	}
}
