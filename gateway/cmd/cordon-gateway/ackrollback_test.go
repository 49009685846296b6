package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cordonhq/cordon/gateway/internal/witness"
)

func TestAckRollbackCommand(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if code := run([]string{"ack-audit-rollback", "--state-dir", dir, "extra"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unexpected argument "extra"`) {
		t.Errorf("extra argument: exit %d, %q", code, errb.String())
	}
	out.Reset()
	if code := run([]string{"ack-audit-rollback", "--state-dir", dir}, &out, &errb); code != 0 || !strings.Contains(out.String(), "nothing to acknowledge") {
		t.Errorf("nothing held: exit %d, %q", code, out.String())
	}
	// A held checkpoint that does not verify is an investigation, not a
	// restore: refused, the files left where they are.
	os.WriteFile(filepath.Join(dir, witness.KeyFile), []byte("cordon-audit/x+00000000+AAAA\n"), 0o600)
	os.WriteFile(filepath.Join(dir, witness.CheckpointFile), []byte("junk"), 0o600)
	errb.Reset()
	if code := run([]string{"ack-audit-rollback", "--state-dir", dir}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "does not verify") {
		t.Errorf("checkpoint that does not verify: exit %d, %q", code, errb.String())
	}
	if _, err := os.Stat(filepath.Join(dir, witness.CheckpointFile)); err != nil {
		t.Errorf("the refused checkpoint was moved: %v", err)
	}
}
