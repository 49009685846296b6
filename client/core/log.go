package core

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
)

// LogSink receives the core's log lines. The shell implements it (and
// passes them to logcat, os_log, a file). Log is called on the goroutine
// that logs: it must not block and must not call back into the core.
// level is slog's: -4 debug, 0 info, 4 warn, 8 error; line is one
// logfmt-style line without the time (the shell's log has its own) and
// never holds keys, tokens or passwords.
type LogSink interface {
	Log(level int, line string)
}

// logHandler is an slog.Handler that formats each record as a text line
// and forwards it to a LogSink.
type logHandler struct {
	sink  LogSink
	min   slog.Level
	inner slog.Handler // writes into out
	out   *lineBuffer  // shared with the handlers derived from this one
}

// lineBuffer holds the line being formatted; mu serializes records.
type lineBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lineBuffer) Write(p []byte) (int, error) { return b.buf.Write(p) }

func newLogHandler(sink LogSink, min slog.Level) *logHandler {
	out := &lineBuffer{}
	inner := slog.NewTextHandler(out, &slog.HandlerOptions{Level: min, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}})
	return &logHandler{sink: sink, min: min, inner: inner, out: out}
}

func (h *logHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.sink != nil && l >= h.min
}

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	h.out.mu.Lock()
	h.out.buf.Reset()
	err := h.inner.Handle(ctx, r)
	line := strings.TrimSuffix(h.out.buf.String(), "\n")
	h.out.mu.Unlock()
	if err != nil {
		return err
	}
	h.sink.Log(int(r.Level), line)
	return nil
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &logHandler{sink: h.sink, min: h.min, inner: h.inner.WithAttrs(as), out: h.out}
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	return &logHandler{sink: h.sink, min: h.min, inner: h.inner.WithGroup(name), out: h.out}
}
