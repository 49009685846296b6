// Package logsetup builds the daemons' logger from their --log-level and
// --log-format flags: text for people (the default), JSON lines for log
// shippers.
package logsetup

import (
	"fmt"
	"io"
	"log/slog"
)

// Formats are the values --log-format takes.
const Formats = "text or json"

// New returns a logger writing to w at level ("debug", "info", "warn",
// "error") in format ("text" or "json").
func New(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use %s", format, Formats)
}
