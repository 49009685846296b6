// Package gendocs writes the manual pages of the four binaries: from the
// cobra command tree of cordonctl and cordon (github.com/spf13/cobra/doc),
// and from the flag set of the two flag-based daemons, cordon-controller
// and cordon-gateway.
//
// It is linked only into binaries built with -tags gendocs (packaging/
// builds those beside the real ones, runs "BINARY __gendocs DIR" and
// throws them away), never into the binaries that ship: the pages come
// from the very flags and commands the shipped binaries parse, without
// adding a man-page generator to them.
package gendocs

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/cordonhq/cordon/internal/buildinfo"
)

// Command is the hidden argument that makes a gendocs build write its
// pages: BINARY __gendocs DIR.
const Command = "__gendocs"

// EnvDate names the variable holding the date printed in the pages
// (Unix seconds, as reproducible builds use); unset, the build's time.
const EnvDate = "SOURCE_DATE_EPOCH"

// manual is the title of the manual the pages belong to.
const manual = "Cordon Manual"

// date is the date printed in the pages.
func date() (time.Time, error) {
	s := os.Getenv(EnvDate)
	if s == "" {
		return time.Now().UTC(), nil
	}
	var sec int64
	if _, err := fmt.Sscan(s, &sec); err != nil {
		return time.Time{}, fmt.Errorf("$%s=%q: want Unix seconds: %w", EnvDate, s, err)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// CobraCommand is the hidden "__gendocs DIR" command of a cobra program:
// it writes one page (section 1) per command of root's tree into DIR.
func CobraCommand(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:    Command + " DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return WriteCobra(root, args[0])
		},
	}
}

// WriteCobra writes the pages of root's command tree into dir.
func WriteCobra(root *cobra.Command, dir string) error {
	d, err := date()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create the man page directory: %w", err)
	}
	root.DisableAutoGenTag = true // no "generated on <date>" line: pages stay reproducible
	hdr := &doc.GenManHeader{Section: "1", Date: &d, Source: "Cordon " + buildinfo.Version(), Manual: manual}
	if err := doc.GenManTree(root, hdr, dir); err != nil {
		return fmt.Errorf("write the man pages of %s: %w", root.Name(), err)
	}
	return nil
}

// Daemon describes a flag-based daemon for its page.
type Daemon struct {
	Name        string // the command, e.g. cordon-gateway
	Short       string // one line, for NAME
	Description string // paragraphs separated by blank lines
	Synopsis    []string
}

// daemons are the pages' words for the two flag-based daemons (their
// flags come from the flag set itself).
var daemons = map[string]Daemon{
	"cordon-controller": {
		Name:  "cordon-controller",
		Short: "the Cordon controller: identity, enrollment, policy, network maps, audit and the admin API",
		Synopsis: []string{
			"[\\fIflags\\fR]",
			"\\fBbackup\\fR \\-\\-out \\fIFILE\\fR (\\-\\-recipient \\fIAGE-KEY\\fR | \\-\\-passphrase\\-stdin) [\\-\\-data\\-dir \\fIDIR\\fR]",
			"\\fBrestore\\fR \\-\\-in \\fIFILE\\fR (\\-\\-identity \\fIFILE\\fR | \\-\\-passphrase\\-stdin) [\\-\\-data\\-dir \\fIDIR\\fR]",
			"\\fBversion\\fR | \\fB\\-\\-version\\fR",
		},
		Description: "cordon-controller keeps the users, devices, gateways, apps and policy of a Cordon network in its store " +
			"(SQLite under --data-dir), computes the network map each agent may see and pushes it over the QUIC control channel, " +
			"and serves the admin API that cordonctl(1) talks to, on --listen (TCP for HTTPS, UDP for QUIC).\n\n" +
			"The package runs it as the systemd unit cordon-controller.service, as the unprivileged user cordon, " +
			"with extra flags from /etc/cordon/controller.env (CORDON_CONTROLLER_ARGS). " +
			"Apart from the subcommands below it takes flags only: any other argument is refused.\n\n" +
			"\"cordon-controller backup\" writes an encrypted (age) backup of the data dir while the controller runs; " +
			"\"cordon-controller restore\" restores one into an empty data dir and verifies its audit log " +
			"(the recovery procedure is in docs/operations.md).",
	},
	"cordon-gateway": {
		Name:  "cordon-gateway",
		Short: "a Cordon gateway: terminates WireGuard from clinicians' devices and authorizes every flow",
		Synopsis: []string{
			"[\\fIflags\\fR]",
			"\\fBuninstall\\fR",
			"\\fBack\\-audit\\-rollback\\fR [\\-\\-state\\-dir \\fIDIR\\fR]",
			"\\fBversion\\fR | \\fB\\-\\-version\\fR",
		},
		Description: "cordon-gateway runs beside a PHI app subnet. It enrolls once with a single-use token (--token-file), " +
			"keeps its keys under --state-dir, terminates WireGuard on --listen-port, authorizes every new flow against the policy " +
			"the controller pushed, serves split-horizon DNS on its overlay address and records flows.\n\n" +
			"In tun mode it needs CAP_NET_ADMIN (TUN device, routes, the nftables host firewall, the IPv4 forwarding sysctl with " +
			"--manage-forwarding) and CAP_NET_BIND_SERVICE (DNS on port 53); userspace mode needs no privileges. " +
			"The package runs it as the systemd unit cordon-gateway.service, as the user cordon with exactly those two capabilities, " +
			"configured by /etc/cordon/gateway.env.\n\n" +
			"The host firewall (nftables table inet cordon) stays after a stop or a crash, so the host stays closed; " +
			"\"cordon-gateway uninstall\" (as root) removes it when the gateway leaves the host for good.\n\n" +
			"\"cordon-gateway ack-audit-rollback\" (gateway stopped) acknowledges that the controller's audit log went back " +
			"(a restore from a backup): it keeps the held checkpoint aside, and the next start pins the restored log.",
	},
}

// WriteFlagMan writes the page (section 8) of the daemon whose flag set
// is fs (fs's name names it) into dir.
func WriteFlagMan(fs *flag.FlagSet, dir string) error {
	d, ok := daemons[fs.Name()]
	if !ok {
		return fmt.Errorf("no manual page text for %q: add it to internal/gendocs", fs.Name())
	}
	when, err := date()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create the man page directory: %w", err)
	}
	path := filepath.Join(dir, d.Name+".8")
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write the man page: %w", err)
	}
	err = FlagMan(f, fs, d, when)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// FlagMan writes d's page, with one entry per flag of fs, to w.
func FlagMan(w io.Writer, fs *flag.FlagSet, d Daemon, when time.Time) error {
	var b strings.Builder
	fmt.Fprintf(&b, ".TH %q \"8\" %q %q %q\n", strings.ToUpper(d.Name), when.Format("Jan 2006"), "Cordon "+buildinfo.Version(), manual)
	fmt.Fprintf(&b, ".nh\n.ad l\n.SH NAME\n%s \\- %s\n", roff(d.Name), roff(d.Short))
	b.WriteString(".SH SYNOPSIS\n")
	for i, s := range d.Synopsis {
		if i > 0 {
			b.WriteString(".br\n")
		}
		fmt.Fprintf(&b, "\\fB%s\\fR %s\n", roff(d.Name), s) // s is roff already
	}
	b.WriteString(".SH DESCRIPTION\n")
	for i, p := range strings.Split(d.Description, "\n\n") {
		if i > 0 {
			b.WriteString(".PP\n")
		}
		b.WriteString(roff(p) + "\n")
	}
	b.WriteString(".SH OPTIONS\n")
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		typ, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, ".TP\n\\fB\\-\\-%s\\fR", roff(f.Name))
		if typ != "" {
			fmt.Fprintf(&b, " \\fI%s\\fR", roff(typ))
		}
		b.WriteString("\n" + roff(usage))
		if def := f.DefValue; def != "" && def != "false" && def != "0" && def != "[]" {
			fmt.Fprintf(&b, " (default: %s)", roff(def))
		}
		b.WriteString("\n")
	})
	if n == 0 {
		return errors.New("the flag set has no flags")
	}
	b.WriteString(".SH EXIT STATUS\n0 on a clean stop (SIGTERM, SIGINT), 1 when the daemon failed, 2 for bad flags or arguments.\n")
	b.WriteString(".SH SEE ALSO\n\\fBcordonctl\\fR(1), \\fBcordon\\fR(1), \\fBsystemctl\\fR(1)\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// roff escapes text for a roff body: backslashes, dashes, and a leading
// dot or quote that would start a request.
func roff(s string) string {
	s = strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, ".") || strings.HasPrefix(line, "'") {
			line = `\&` + line
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}
