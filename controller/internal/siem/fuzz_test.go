package siem

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzFileRecover: whatever a sink file holds (a crash, a hand edit), a
// file sink opens it without panicking, leaves it ending at a line end,
// and resumes at a seq no line claims beyond.
func FuzzFileRecover(f *testing.F) {
	f.Add([]byte("{\"metadata\":{\"sequence\":4}}\n{\"metadata\":{\"seq"))
	f.Add([]byte("{\"unmapped\":{\"cordon\":{\"checkpoint\":{\"size\":9}}}}\n"))
	f.Add([]byte("\n\n\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "a.jsonl")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		fs, err := openFile(path, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		seq, cp := fs.Resume()
		fs.Close()
		got, _ := os.ReadFile(path)
		if len(got) > 0 && got[len(got)-1] != '\n' {
			t.Fatalf("file left with a torn line: %q", got)
		}
		if !bytes.HasPrefix(b, got) {
			t.Fatalf("recovery changed more than the torn tail")
		}
		if seq < 0 || cp < 0 {
			t.Fatalf("resume %d %d", seq, cp)
		}
	})
}

// FuzzParseConfig: the config parser never panics, and what it accepts
// passes the sink checks.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("sinks:\n  - {name: a, format: syslog, transport: tcp, address: 'h:1'}\n"))
	f.Add([]byte("sinks:\n  - {name: a, format: ocsf, transport: file, path: /x, alert_after: 5m}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := ParseFile(b)
		if err != nil {
			return
		}
		for _, s := range cfg.Sinks {
			if err := s.check(); err != nil {
				t.Fatalf("accepted a sink that fails its check: %v", err)
			}
		}
	})
}
