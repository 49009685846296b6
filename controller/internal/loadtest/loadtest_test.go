//go:build loadtest

package main

import (
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestSmallRun runs the whole harness against a freshly built controller
// with a few agents, so a change to the controller or the protocol that
// breaks the harness shows before a long run does:
//
//	go test -tags loadtest ./controller/internal/loadtest
func TestSmallRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the controller")
	}
	bin := filepath.Join(t.TempDir(), "cordon-controller")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/cordonhq/cordon/controller/cmd/cordon-controller").CombinedOutput()
	if err != nil {
		t.Fatalf("build controller: %v\n%s", err, out)
	}
	cfg := config{
		controller: bin, changes: changeKinds, repeat: 2,
		stormDeadline: time.Minute, changeDeadline: 30 * time.Second,
		quiet: 300 * time.Millisecond, idle: time.Second,
		logLevel: "info", workDir: t.TempDir(),
	}
	sc := scenario{devices: 30, apps: 40, common: 4, depts: 3, spare: 2}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := runOne(ctx, cfg, sc, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !res.stormDone || res.stormHave != sc.devices {
		t.Fatalf("storm: %d of %d clients got a map", res.stormHave, sc.devices)
	}
	if got, want := len(res.changes), 2*len(changeKinds); got != want {
		t.Fatalf("%d changes measured, want %d", got, want)
	}
	for _, c := range res.changes {
		if c.err != nil || c.timedOut || c.acked != c.affected {
			t.Errorf("%s: %d of %d agents acknowledged (timed out %v, err %v)", c.kind, c.acked, c.affected, c.timedOut, c.err)
		}
		want := 2 // the user's device and the gateway
		if c.kind == changeGrantAll || c.kind == changeRevokeAll {
			want = sc.devices + 1
		}
		if c.affected != want {
			t.Errorf("%s affects %d agents, want %d", c.kind, c.affected, want)
		}
		if c.bytes == 0 {
			t.Errorf("%s: no bytes counted", c.kind)
		}
	}
	if res.rss == 0 {
		t.Error("controller RSS not measured")
	}
}
