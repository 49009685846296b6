package spool

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

const crashDirEnv = "CORDON_SPOOLCRASH_DIR"

// TestSpoolCrashChild is the child of TestSpoolCrash: it appends batches
// to the spool and prints the last sequence number of each once Append
// returned it (durable), trimming now and then as if acknowledged, until
// killed.
func TestSpoolCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("the child of TestSpoolCrash; runs only under it")
	}
	s, err := Open(dir, Options{SegmentBytes: 16 << 10})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	for {
		seq := s.Next()
		n := 1 + r.IntN(64)
		batch := make([][]byte, n)
		for i := range batch {
			batch[i] = rec(seq + uint64(i))
		}
		first, got, err := s.Append(batch)
		if err != nil || got != n || first != seq {
			fmt.Println("error", first, got, err)
			os.Exit(2)
		}
		fmt.Println("durable", seq+uint64(n)-1)
		if r.IntN(20) == 0 && seq > 300 {
			// Said before it is done: the kill may land in between, and
			// records up to it may then be gone or not.
			trim := seq - 300
			fmt.Println("trimmed", trim)
			if err := s.Ack(trim); err != nil {
				fmt.Println("error", err)
				os.Exit(2)
			}
		}
	}
}

// TestSpoolCrash: kill -9 of a process appending to the spool, at random
// points, then reopen: every record Append returned is there once, in
// order, with its data; numbering goes on after it; torn tails are
// dropped (and counted), never a panic.
func TestSpoolCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: not in -short")
	}
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 4))
	var durable, trimmed uint64
	var torn uint64
	for round := range 10 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSpoolCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		take := func(l string) {
			switch {
			case strings.HasPrefix(l, "durable "):
				n, _ := strconv.ParseUint(strings.TrimPrefix(l, "durable "), 10, 64)
				if n <= durable {
					t.Fatalf("round %d: durable went from %d to %d: numbering repeated after a crash", round, durable, n)
				}
				durable = n
			case strings.HasPrefix(l, "trimmed "):
				n, _ := strconv.ParseUint(strings.TrimPrefix(l, "trimmed "), 10, 64)
				trimmed = max(trimmed, n)
			default:
				t.Errorf("round %d: child: %s", round, l)
			}
		}
		want := 1 + r.IntN(60)
		for range want {
			l, ok := <-lines
			if !ok {
				t.Fatalf("round %d: child exited", round)
			}
			take(l)
		}
		cmd.Process.Kill()
		for l := range lines {
			take(l)
		}
		cmd.Wait()

		s, err := Open(dir, Options{SegmentBytes: 16 << 10})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		st := s.Stats()
		torn += st.Torn
		if st.Next <= durable {
			t.Fatalf("round %d: next %d, but %d was durable", round, st.Next, durable)
		}
		c := s.Cursor(0)
		want1 := uint64(0)
		for {
			rs, err := c.Next(256)
			if err != nil {
				t.Fatalf("round %d: read: %v", round, err)
			}
			if len(rs) == 0 {
				break
			}
			for _, x := range rs {
				if want1 == 0 {
					if x.Seq > trimmed+1 {
						t.Fatalf("round %d: oldest record %d, but only up to %d was trimmed: records lost", round, x.Seq, trimmed)
					}
				} else if x.Seq != want1 {
					t.Fatalf("round %d: record %d after %d", round, x.Seq, want1-1)
				}
				if !bytes.Equal(x.Data, rec(x.Seq)) {
					t.Fatalf("round %d: record %d holds %q", round, x.Seq, x.Data)
				}
				want1 = x.Seq + 1
			}
		}
		c.Close()
		if want1 <= durable {
			t.Fatalf("round %d: records end at %d, but %d was durable", round, want1-1, durable)
		}
		s.Close()
	}
	t.Logf("10 kills: %d records durable, %d torn tails dropped", durable, torn)
}
