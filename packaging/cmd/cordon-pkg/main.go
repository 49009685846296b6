// Command cordon-pkg builds Cordon's .deb and .rpm packages (see package
// packaging). Run from the repository's root:
//
//	make packages
//	# or: cd packaging && go run ./cmd/cordon-pkg -repo .. -version v1.2.3 -out ../dist
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cordonhq/cordon/packaging"
)

func main() {
	repo := flag.String("repo", "..", "the repository's root")
	version := flag.String("version", "", "version stamped into the binaries, e.g. v1.2.3 (required)")
	bin := flag.String("bin", "", "directory of already built binaries (make build); empty: build them")
	out := flag.String("out", "dist", "where the packages are written")
	formats := flag.String("formats", "deb,rpm", "package formats: deb, rpm")
	arch := flag.String("arch", "", "GOARCH of the package (default: this machine's)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *version == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "cordon-pkg: -version is required and there are no arguments (see -help)")
		os.Exit(2)
	}
	// SOURCE_DATE_EPOCH, when set, makes the files' times and the man
	// pages' dates reproducible.
	var date time.Time
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "cordon-pkg: SOURCE_DATE_EPOCH=%q: want Unix seconds\n", s)
			os.Exit(2)
		}
		date = time.Unix(sec, 0).UTC()
	}
	work, err := os.MkdirTemp("", "cordon-pkg-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "cordon-pkg: %v\n", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	abs := func(p string) string {
		if p == "" {
			return ""
		}
		a, err := filepath.Abs(p)
		if err != nil {
			return p
		}
		return a
	}
	paths, err := packaging.Build(ctx, packaging.Options{
		Repo: abs(*repo), Version: *version, BinDir: abs(*bin), WorkDir: work, OutDir: abs(*out),
		Formats: strings.Split(*formats, ","), Arch: *arch, Date: date, Log: log,
	})
	stop()
	os.RemoveAll(work)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cordon-pkg: %v\n", err)
		os.Exit(1)
	}
	for _, p := range paths {
		fmt.Println(p)
	}
}
