package siem

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
)

// crashChildEnv names the data dir and receiver address of the child
// process TestCrashChild runs as.
const crashChildEnv = "CORDON_SIEM_CRASH_CHILD"

// TestCrashChild is the exporter of TestExportCrash, run as its own
// process so that it can be killed with SIGKILL: it exports the log in
// the data dir to a file sink and a TCP sink until killed.
func TestCrashChild(t *testing.T) {
	spec := os.Getenv(crashChildEnv)
	if spec == "" {
		t.Skip("run by TestExportCrash only (as a child process to kill -9)")
	}
	dir, addr, _ := strings.Cut(spec, ",")
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "cordon.db"))
	if err != nil {
		t.Fatal(err)
	}
	x, err := New(Config{Log: st, Recorder: state.New(state.Config{Store: st}), Dir: filepath.Join(dir, "siem"), Batch: 100,
		Poll: 5 * time.Millisecond, Backoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Hostname: "ctl-1",
		Sinks: []SinkConfig{
			{Name: "file", Format: FormatOCSF, Transport: TransportFile, Path: filepath.Join(dir, "audit.jsonl")},
			tcpSink("tcp", FormatSyslog, addr),
		}})
	if err != nil {
		t.Fatal(err)
	}
	x.Run(context.Background()) // until killed
}

// TestExportCrash: the exporter is killed with SIGKILL at random points
// while it sends 6,000 records in batches of 100, and restarted each
// time. Afterwards the file sink holds every record exactly once, in
// order (its tail wins over the cursor file, and a torn last line is
// dropped); the TCP receiver holds every record, in order, where each
// restart repeats at most the one batch whose cursor write the kill
// prevented.
func TestExportCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 loop; not in -short")
	}
	e := newEnv(t)
	const n = 6000
	e.add(t, n)
	e.st.Close() // the child opens it
	r := startReceiver(t, FormatSyslog, nil, "")
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+e.dir+","+r.addr)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	received := func() int {
		s, _ := r.seqs()
		return len(s)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	kills := 0
	for received() < n && kills < 20 {
		// Kill once the receiver has some random number more records.
		target := received() + 1 + rng.IntN(900)
		cmd := start()
		waitFor(t, "records to arrive", func() error {
			if received() < min(target, n) {
				return fmt.Errorf("%d of %d", received(), target)
			}
			return nil
		})
		if received() >= n {
			cmd.Process.Kill()
			cmd.Wait()
			break
		}
		cmd.Process.Kill()
		cmd.Wait()
		kills++
	}
	// A last run to the end: both sinks' cursors at n.
	cmd := start()
	waitFor(t, "both sinks to finish", func() error {
		for _, s := range []string{"file", "tcp"} {
			b, err := os.ReadFile(filepath.Join(e.dir, "siem", s+".cursor"))
			if err != nil {
				return err
			}
			var c cursor
			if err := json.Unmarshal(b, &c); err != nil {
				return err
			}
			if c.Seq != n {
				return fmt.Errorf("%s at %d", s, c.Seq)
			}
		}
		return nil
	})
	cmd.Process.Kill()
	cmd.Wait()

	exactlyOnce(t, fileSeqs(t, filepath.Join(e.dir, "audit.jsonl")), n)

	seqs, _ := r.seqs()
	var next int64 = 1
	repeats := 0
	for i, s := range seqs {
		switch {
		case s == next:
			next++
		case s < next && next-s <= 100:
			// A restart replays from its cursor: at most one batch back.
			repeats++
			next = s + 1
		default:
			t.Fatalf("record %d: seq %d, want %d or a replay of at most one batch: %v", i, s, next, around(seqs, i))
		}
	}
	if next != n+1 {
		t.Fatalf("TCP receiver got up to %d of %d", next-1, n)
	}
	t.Logf("%d kills; the TCP receiver got %d records for %d (%d replays)", kills, len(seqs), n, repeats)
	if kills == 0 {
		t.Fatal("no kill happened: the test proved nothing")
	}
}
