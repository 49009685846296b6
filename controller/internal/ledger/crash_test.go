package ledger_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/ledger"
	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/pkg/audit"
)

// crashChildEnv makes the test binary the approving controller of
// TestArchiveCrash instead of running tests: DIR ID.
const crashChildEnv = "CORDON_LEDGER_ARCHIVE_CHILD"

func TestMain(m *testing.M) {
	if arg := os.Getenv(crashChildEnv); arg != "" {
		os.Exit(archiveChild(arg))
	}
	os.Exit(m.Run())
}

// archiveChild approves archive request ID in the database in DIR and
// says "approving" just before, so the parent can kill it mid-way.
func archiveChild(arg string) int {
	dir, id, _ := strings.Cut(arg, " ")
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "cordon.db"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	owner := state.New(state.Config{Store: st, Now: func() time.Time { return t0.Add(time.Hour) }})
	fmt.Println("approving")
	if _, err := owner.ApproveArchive(ctx, state.Origin{Actor: "admin:bob"}, "bob", id); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("approved")
	return 0
}

// TestArchiveCrash: an archive is one transaction (the bodies leave, the
// archive and its request's use are recorded, the approval is logged),
// so a controller killed (SIGKILL) at any point of it leaves all of it or
// none: after a restart the log verifies either way, and the request is
// used exactly when the records are archived.
func TestArchiveCrash(t *testing.T) {
	const records = 12_000
	base := newController(t)
	for n := 0; n < records; n += 1000 {
		if err := base.st.AppendAudit(t.Context(), flowBatch(1000)...); err != nil {
			t.Fatal(err)
		}
	}
	base.sign(t)
	id := base.request(t, "alice", records).Request.ID
	base.sign(t)
	base.close(t)

	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	outcomes := map[bool]int{}
	var took time.Duration // how long the first, uninterrupted, approval took
	for i := range 7 {
		c := &controller{dir: t.TempDir(), clock: t0.Add(2 * time.Hour)}
		for _, f := range []string{"cordon.db", ledger.KeyFile} {
			copyFile(t, filepath.Join(base.dir, f), filepath.Join(c.dir, f))
		}
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), crashChildEnv+"="+c.dir+" "+id)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		if !lines.Scan() || lines.Text() != "approving" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child did not start approving: %q", lines.Text())
		}
		// The first run finishes and shows how long an approval takes;
		// the others are killed at a random point of twice that:
		// before, during or after the transaction.
		began := time.Now()
		if i > 0 {
			time.Sleep(time.Duration(r.Int64N(int64(took)*2 + 1)))
			cmd.Process.Kill()
		}
		io.Copy(io.Discard, out)
		cmd.Wait()
		if i == 0 {
			took = time.Since(began)
		}

		c.open(t)
		as, err := c.st.ListAuditArchives(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		req, err := c.st.GetArchiveRequest(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		evs, err := c.st.ListAudit(t.Context(), store.AuditFilter{Type: string(audit.AuditArchiveApprove)})
		if err != nil {
			t.Fatal(err)
		}
		n, err := c.st.AuditLogSize(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		archived := len(as) == 1
		switch {
		case archived && (req.ApprovedAt == nil || len(evs) != 1 || n != records+2 || as[0].ToSeq != records):
			t.Fatalf("run %d: archived, but request %+v, %d approval records, log of %d", i, req, len(evs), n)
		case !archived && (len(as) != 0 || req.ApprovedAt != nil || len(evs) != 0 || n != records+1):
			t.Fatalf("run %d: not archived, but archives %+v, request %+v, %d approval records, log of %d", i, as, req, len(evs), n)
		}
		if i == 0 && !archived {
			t.Fatalf("the approval that was not killed did not archive")
		}
		outcomes[archived]++
		c.sign(t)
		if rep := c.verify(t); !rep.OK() || len(rep.Archived) != len(as) {
			t.Fatalf("run %d (archived %v): log after the crash: %+v", i, archived, rep)
		}
		if !archived {
			// The request survived unused: approving it now works.
			if _, err := c.state.ApproveArchive(t.Context(), state.Origin{Actor: "admin:bob"}, "bob", id); err != nil {
				t.Fatalf("run %d: approve after the crash: %v", i, err)
			}
		}
		c.close(t)
	}
	t.Logf("an approval took %v; kills that left the archive done: %d, not begun or rolled back: %d", took, outcomes[true]-1, outcomes[false])
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
