package gendocs

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

func TestFlagManListsEveryFlagEscaped(t *testing.T) {
	fs := flag.NewFlagSet("cordon-gateway", flag.ContinueOnError)
	fs.String("state-dir", "/var/lib/cordon-gateway", "directory for keys")
	fs.Bool("manage-forwarding", false, "turn `IPv4` forwarding on")
	fs.String("odd", "", ".starts with a dot and has a \\ backslash")
	var b strings.Builder
	when := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	if err := FlagMan(&b, fs, daemons["cordon-gateway"], when); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{
		`.TH "CORDON-GATEWAY" "8" "Dec 2026"`,
		".SH NAME\ncordon\\-gateway \\- ",
		`\fB\-\-state\-dir\fR \fIstring\fR` + "\ndirectory for keys (default: /var/lib/cordon\\-gateway)\n",
		`\fB\-\-manage\-forwarding\fR \fIIPv4\fR` + "\nturn IPv4 forwarding on\n",
		"\\&.starts with a dot and has a \\e backslash",
		".SH EXIT STATUS",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
	// No line of the body starts a roff request by accident.
	for _, l := range strings.Split(page, "\n") {
		if strings.HasPrefix(l, ".") && !strings.HasPrefix(l, ".TH") && !strings.HasPrefix(l, ".SH") &&
			!strings.HasPrefix(l, ".TP") && !strings.HasPrefix(l, ".PP") && !strings.HasPrefix(l, ".br") &&
			!strings.HasPrefix(l, ".nh") && !strings.HasPrefix(l, ".ad") {
			t.Errorf("line starts a roff request: %q", l)
		}
	}
}

func TestFlagManRefusesUnknownDaemonAndEmptyFlagSet(t *testing.T) {
	if err := WriteFlagMan(flag.NewFlagSet("cordon-nothing", flag.ContinueOnError), t.TempDir()); err == nil {
		t.Error("a daemon with no page text was accepted")
	}
	var b strings.Builder
	if err := FlagMan(&b, flag.NewFlagSet("cordon-gateway", flag.ContinueOnError), daemons["cordon-gateway"], time.Unix(0, 0)); err == nil {
		t.Error("an empty flag set made a page")
	}
}

func TestWriteCobraOnePagePerCommand(t *testing.T) {
	t.Setenv(EnvDate, "1700000000")
	root := &cobra.Command{Use: "cordonctl", Short: "Administer"}
	seg := &cobra.Command{Use: "segment", Short: "Segments"}
	create := &cobra.Command{Use: "create NAME", Short: "Create a segment", Run: func(*cobra.Command, []string) {}}
	create.Flags().String("cidr", "", "the prefix")
	seg.AddCommand(create)
	root.AddCommand(seg, CobraCommand(root))
	dir := t.TempDir()
	root.SetArgs([]string{Command, dir})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "cordonctl-segment-create.1"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "cidr") || !strings.Contains(string(b), "Nov 2023") {
		t.Errorf("cordonctl-segment-create.1 lacks its flag or the date of $%s:\n%s", EnvDate, b)
	}
	if _, err := os.Stat(filepath.Join(dir, "cordonctl-__gendocs.1")); err == nil {
		t.Error("the hidden generator command got a page")
	}
	t.Setenv(EnvDate, "yesterday")
	if err := WriteCobra(root, dir); err == nil {
		t.Errorf("$%s=yesterday was accepted", EnvDate)
	}
}
