package state_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cordonhq/cordon/controller/internal/state"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/wgkey"
	"golang.org/x/mod/sumdb/tlog"
)

const (
	crashChildEnv = "CORDON_FLOWCRASH_DB"
	crashSpool    = "0123456789abcdef0123456789abcdef"
)

// flowRecord is the audit record of sequence number seq, as a gateway
// would send it.
func flowRecord(gw string, seq uint64) store.AuditEvent {
	return store.AuditEvent{Type: audit.FlowAllow, Outcome: string(audit.Allow), Subject: "ehr", Actor: "gateway:" + gw,
		Time: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC).Add(time.Duration(seq) * time.Millisecond),
		Details: map[string]string{"proto": "tcp", "src": "100.64.0.2:40000", "dst": "10.20.0.10:443", "gateway": gw,
			"seq": strconv.FormatUint(seq, 10)}}
}

// TestFlowBatchCrashChild is the child of TestFlowBatchCrash: it records
// numbered batches from the sequence number the parent says (a gateway's
// resend from its oldest unacknowledged record) and prints each
// acknowledgement once RecordFlowBatch returned it, until killed.
func TestFlowBatchCrashChild(t *testing.T) {
	dbPath := os.Getenv(crashChildEnv)
	if dbPath == "" {
		t.Skip("the child of TestFlowBatchCrash; runs only under it")
	}
	from, _ := strconv.ParseUint(os.Getenv("CORDON_FLOWCRASH_FROM"), 10, 64)
	gw := os.Getenv("CORDON_FLOWCRASH_GW")
	ctx := context.Background()
	db, err := sqlite.Open(ctx, dbPath)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	s := state.New(state.Config{Store: db})
	r := rand.New(rand.NewPCG(from, 7))
	for seq := from; ; {
		n := 1 + r.IntN(40)
		b := state.FlowBatch{GatewayID: gw, SpoolID: crashSpool}
		for i := range n {
			b.Events = append(b.Events, flowRecord(gw, seq+uint64(i)))
			b.Seqs = append(b.Seqs, seq+uint64(i))
		}
		acked, err := s.RecordFlowBatch(ctx, b)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		fmt.Println("ack", acked)
		seq += uint64(n)
	}
}

// TestFlowBatchCrash: kill -9 of the controller's writer at random points
// while a gateway's numbered batches are recorded, each restart resending
// from somewhat before the last acknowledgement (an acknowledgement lost
// with the connection): afterwards every acknowledged record is in the
// trail exactly once, with nothing half-applied (the stored highest
// number matches the records).
func TestFlowBatchCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: not in -short")
	}
	ctx := context.Background()
	dbPath := filepath.Join(t.TempDir(), "cordon.db")
	db, err := sqlite.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	s := state.New(state.Config{Store: db})
	admin := state.Origin{Actor: "admin:test"}
	if _, err := s.CreateSegment(ctx, admin, store.Segment{Name: "lan", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/24")}}); err != nil {
		t.Fatal(err)
	}
	secret := sha256.Sum256([]byte("token"))
	if err := s.CreateEnrollToken(ctx, admin, store.EnrollToken{ID: "tok-1", Hash: secret[:], Segment: "lan", Name: "gw",
		CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	key, err := wgkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	gw, _, err := s.EnrollGateway(ctx, secret[:], store.Gateway{Name: "gw", Segment: "lan", PublicKey: key.Public()}, "test",
		func(string) (string, error) { return "cert", nil })
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var lastAck uint64
	for round := range 8 {
		from := uint64(1)
		if lastAck > 0 {
			// Resend some acknowledged ones (unsigned: no underflow past 1).
			if back := uint64(r.IntN(60)); lastAck+1 > back {
				from = max(1, lastAck+1-back)
			}
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestFlowBatchCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dbPath, "CORDON_FLOWCRASH_FROM="+strconv.FormatUint(from, 10),
			"CORDON_FLOWCRASH_GW="+gw.ID)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acks := make(chan uint64, 1024)
		go func() {
			defer close(acks)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if v, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
					n, _ := strconv.ParseUint(v, 10, 64)
					acks <- n
				} else if strings.HasPrefix(sc.Text(), "error") {
					t.Errorf("round %d: child: %s", round, sc.Text())
				}
			}
		}()
		// Kill after a random number of acknowledgements (each a commit):
		// sometimes during the first, sometimes well into the run.
		want := 1 + r.IntN(30)
		for n := 0; n < want; n++ {
			a, ok := <-acks
			if !ok {
				t.Fatalf("round %d: child exited", round)
			}
			if a < lastAck {
				t.Fatalf("round %d: ack went back from %d to %d", round, lastAck, a)
			}
			lastAck = a
		}
		cmd.Process.Kill() // SIGKILL: mid-transaction or between
		for a := range acks {
			lastAck = max(lastAck, a) // printed before the kill landed
		}
		cmd.Wait()
	}

	db, err = sqlite.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ack, err := db.GetFlowAck(ctx, gw.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Seq < lastAck || ack.SpoolID != crashSpool {
		t.Fatalf("stored ack %+v below the last one acknowledged (%d): acknowledged records lost", ack, lastAck)
	}
	count := map[uint64]int{}
	err = db.ScanAuditLog(ctx, 1, 1<<62, func(e store.AuditEvent, _ tlog.Hash, _ bool) error {
		if e.Type == audit.FlowAllow {
			n, _ := strconv.ParseUint(e.Details["seq"], 10, 64)
			count[n]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= ack.Seq; seq++ {
		if count[seq] != 1 {
			t.Fatalf("record %d is in the trail %d times, want once (stored ack %d, last acknowledged %d)", seq, count[seq], ack.Seq, lastAck)
		}
	}
	if len(count) != int(ack.Seq) {
		t.Fatalf("%d distinct records in the trail, stored ack %d: a record committed without its ack", len(count), ack.Seq)
	}
	t.Logf("8 kills; %d records, each once; last acknowledged %d", ack.Seq, lastAck)
}
