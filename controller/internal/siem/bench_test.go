package siem

import (
	"io"
	"net"
	"path/filepath"
	"testing"

	"github.com/cordonhq/cordon/pkg/auditlog"
	"golang.org/x/mod/sumdb/tlog"
)

// BenchmarkExport: records per second from a SQLite log of 20,000 flow
// records to a local sink, each batch acknowledged (TCP) or synced (file)
// and its cursor file replaced, as in production. One op is one record.
func BenchmarkExport(b *testing.B) {
	const n = 20_000
	e := newEnv(b)
	e.add(b, n)
	for _, tc := range []struct {
		name string
		sink func(addr string) SinkConfig
	}{
		{"syslog-tcp", func(addr string) SinkConfig { return tcpSink("s", FormatSyslog, addr) }},
		{"ocsf-tcp", func(addr string) SinkConfig { return tcpSink("s", FormatOCSF, addr) }},
		{"ocsf-file", func(string) SinkConfig {
			return SinkConfig{Name: "s", Format: FormatOCSF, Transport: TransportFile, Path: filepath.Join(b.TempDir(), "a.jsonl")}
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go io.Copy(io.Discard, c)
				}
			}()
			sent := 0
			for b.Loop() {
				b.StopTimer()
				x, err := New(Config{Log: e.st, Recorder: e.state, Dir: b.TempDir(), Sinks: []SinkConfig{tc.sink(ln.Addr().String())},
					Hostname: "ctl-1", Origin: "o", Now: e.now})
				if err != nil {
					b.Fatal(err)
				}
				s := x.sinks[0]
				b.StartTimer()
				for s.cur.Seq < n {
					if _, err := s.step(b.Context()); err != nil {
						b.Fatal(err)
					}
				}
				s.closeConn()
				sent += n
			}
			b.ReportMetric(float64(sent)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkEncode: the cost of formatting one record.
func BenchmarkEncode(b *testing.B) {
	r := sampleRecords()[0]
	line := r.Canonical()
	leaf := tlog.RecordHash(line)
	var buf []byte
	b.Run("syslog", func(b *testing.B) {
		for b.Loop() {
			buf = appendSyslogRecord(buf[:0], "ctl-1", r, line, leaf)
		}
	})
	b.Run("ocsf", func(b *testing.B) {
		for b.Loop() {
			buf, _ = appendOCSFRecord(buf[:0], "o", r, line, leaf)
		}
	})
	b.Run("canonical", func(b *testing.B) {
		for b.Loop() {
			buf = r.AppendCanonical(buf[:0])
		}
	})
	_ = auditlog.TimeLayout
}
