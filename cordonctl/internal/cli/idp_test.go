package cli_test

import (
	"strings"
	"testing"
)

func TestIdPList(t *testing.T) {
	h := newHarness(t)
	out := h.ok("idp", "list")
	if strings.Count(strings.TrimSpace(out), "\n") != 0 || !strings.Contains(out, "ISSUER") {
		t.Errorf("idp list without providers: %q", out)
	}
	if out := h.ok("idp", "list", "-o", "json"); !strings.Contains(out, `"providers": []`) {
		t.Errorf("idp list -o json: %q", out)
	}
}
