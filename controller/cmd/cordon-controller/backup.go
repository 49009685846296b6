package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"filippo.io/age"

	"github.com/cordonhq/cordon/controller/internal/backup"
	"github.com/cordonhq/cordon/controller/internal/ca"
)

// minPassphrase is the shortest passphrase a backup is encrypted with.
const minPassphrase = 12

// maxPassphrase bounds the line read from stdin.
const maxPassphrase = 1024

// runBackup is "cordon-controller backup": an encrypted backup of a
// (running) controller's data dir.
func runBackup(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cordon-controller backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "/var/lib/cordon-controller", "the controller's data directory (it may be running)")
	out := fs.String("out", "", "the backup file to write (created 0600; must not exist)")
	var recipients []string
	fs.Func("recipient", "age public key (age1... or age1pq1...) to encrypt the backup to (repeatable); keep its identity file off this machine", func(s string) error {
		recipients = append(recipients, s)
		return nil
	})
	passStdin := fs.Bool("passphrase-stdin", false, "encrypt with a passphrase read from the first line of stdin (age scrypt) instead of --recipient")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "cordon-controller backup: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usage("unexpected argument %q", fs.Arg(0))
	}
	if *out == "" {
		return usage("--out is required")
	}
	if (len(recipients) > 0) == *passStdin {
		return usage("give --recipient or --passphrase-stdin (one of them)")
	}
	var rs []age.Recipient
	for _, s := range recipients {
		// One key per flag: X25519 (age1...) or post-quantum hybrid
		// (age1pq1...), whatever this age version parses.
		r, err := age.ParseRecipients(strings.NewReader(s))
		if err == nil && (len(r) != 1 || strings.ContainsAny(s, "\r\n")) {
			err = errors.New("one key per --recipient")
		}
		if err != nil {
			return usage("--recipient %q: %v (an age public key starts with age1; make one with age-keygen)", s, err)
		}
		rs = append(rs, r...)
	}
	if *passStdin {
		p, err := readPassphrase(stdin)
		if err != nil {
			return usage("--passphrase-stdin: %v", err)
		}
		r, err := age.NewScryptRecipient(p)
		if err != nil {
			return usage("--passphrase-stdin: %v", err)
		}
		rs = append(rs, r)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		fmt.Fprintf(stderr, "cordon-controller backup: %v (give a new file name)\n", err)
		return 1
	}
	m, err := backup.Create(ctx, backup.Options{DataDir: *dataDir, Recipients: rs, Progress: stderr}, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(*out)
		fmt.Fprintf(stderr, "cordon-controller backup: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "backup written to %s in %v: %d files, schema version %d, audit log %d records (root %s)\n",
		*out, time.Since(start).Round(time.Millisecond), len(m.Files), m.SchemaVersion, m.Audit.Size, m.Audit.Root)
	return 0
}

// runRestore is "cordon-controller restore": a backup into a new data dir.
func runRestore(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cordon-controller restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "", "the backup file")
	dataDir := fs.String("data-dir", "/var/lib/cordon-controller", "the data directory to restore into: absent or empty (created 0700)")
	identity := fs.String("identity", "", "age identity file (AGE-SECRET-KEY-1...) of the --recipient the backup was made for")
	passStdin := fs.Bool("passphrase-stdin", false, "decrypt with the passphrase read from the first line of stdin")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "cordon-controller restore: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usage("unexpected argument %q", fs.Arg(0))
	}
	if *in == "" {
		return usage("--in is required")
	}
	if (*identity != "") == *passStdin {
		return usage("give --identity or --passphrase-stdin (one of them)")
	}
	var ids []age.Identity
	if *identity != "" {
		f, err := os.Open(*identity)
		if err != nil {
			return usage("--identity: %v", err)
		}
		ids, err = age.ParseIdentities(io.LimitReader(f, 1<<20))
		f.Close()
		if err != nil {
			return usage("--identity %s: %v", *identity, err)
		}
	} else {
		p, err := readPassphrase(stdin)
		if err != nil {
			return usage("--passphrase-stdin: %v", err)
		}
		id, err := age.NewScryptIdentity(p)
		if err != nil {
			return usage("--passphrase-stdin: %v", err)
		}
		ids = append(ids, id)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	f, err := os.Open(*in)
	if err != nil {
		fmt.Fprintf(stderr, "cordon-controller restore: %v\n", err)
		return 1
	}
	defer f.Close()
	res, err := backup.Restore(ctx, backup.RestoreOptions{DataDir: *dataDir, Identities: ids, Progress: stderr}, bufio.NewReaderSize(f, 1<<16))
	if err != nil {
		fmt.Fprintf(stderr, "cordon-controller restore: %v\n", err)
		if errors.Is(err, backup.ErrNotEmpty) {
			return 2
		}
		return 1
	}
	authority, err := ca.LoadOrCreate(*dataDir)
	if err != nil {
		fmt.Fprintf(stderr, "cordon-controller restore: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "restored the backup of %s into %s in %v: %d files, audit log of %d records verified; CA fingerprint %s (agents trust only this one)\n"+
		"start the controller on the address agents know: cordon-controller --data-dir %s --listen ADDR\n",
		res.Manifest.Time.Format(time.RFC3339), *dataDir, time.Since(start).Round(time.Millisecond), len(res.Manifest.Files), res.Audit.Records,
		authority.Fingerprint(), *dataDir)
	return 0
}

// readPassphrase reads the first line of r.
func readPassphrase(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, maxPassphrase+1)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	if len(line) > maxPassphrase {
		return "", fmt.Errorf("longer than %d bytes", maxPassphrase)
	}
	p := strings.TrimRight(line, "\r\n")
	if len(p) < minPassphrase {
		return "", fmt.Errorf("the passphrase is shorter than %d characters", minPassphrase)
	}
	return p, nil
}
