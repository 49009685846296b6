package cli_test

import (
	"strings"
	"testing"

	"github.com/cordonhq/cordon/cordonctl/internal/cli"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// device quarantine, show, list and release: the reason is required, a
// helpdesk token quarantines but cannot release, and each command says
// what it did.
func TestDeviceQuarantine(t *testing.T) {
	h := newHarness(t)
	h.run("correct horse battery staple\n", "user", "create", "nurse", "--password-stdin")
	k, err := wgkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	id, err := h.srv.AddDevice(t.Context(), "nurse", "ws1", k.Public())
	if err != nil {
		t.Fatal(err)
	}
	owner := h.env[cli.EnvToken]
	helpdesk := strings.TrimSpace(h.ok("token", "create", "--name", "hd", "--role", "helpdesk", "--ttl", "1d"))

	h.fails(cli.ExitUsage, []string{"--reason is required"}, "device", "quarantine", id)
	h.fails(cli.ExitNotFound, []string{"not found"}, "device", "quarantine", "dev-nope", "--reason", "x")
	h.env[cli.EnvToken] = helpdesk
	out := h.ok("device", "quarantine", id, "--reason", "EDR alert, ticket 4411")
	if !strings.Contains(out, "quarantined") || !strings.Contains(out, "EDR alert, ticket 4411") {
		t.Errorf("quarantine output:\n%s", out)
	}
	h.fails(cli.ExitUnauthorized, []string{"users.write"}, "device", "release", id)
	if out := h.ok("device", "show", id); !strings.Contains(out, "Reason:      EDR alert, ticket 4411") || !strings.Contains(out, "State:       quarantined") {
		t.Errorf("device show:\n%s", out)
	}
	if out := h.ok("device", "list"); !strings.Contains(out, "QUARANTINED") || strings.Count(out, "\n") != 2 || strings.HasSuffix(strings.TrimSpace(out), "-") {
		t.Errorf("device list does not show the quarantine:\n%s", out)
	}
	h.env[cli.EnvToken] = owner
	if out := h.ok("device", "release", id, "--comment", "reimaged"); !strings.Contains(out, "State:       active") {
		t.Errorf("release output:\n%s", out)
	}
	h.fails(cli.ExitConflict, []string{"not quarantined"}, "device", "release", id)
}
