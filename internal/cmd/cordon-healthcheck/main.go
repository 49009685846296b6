// Command cordon-healthcheck asks a Cordon daemon's health endpoint whether
// it is up, for container health checks: the image is FROM scratch (no
// shell, no curl), so Docker's HEALTHCHECK and a Kubernetes exec probe run
// this instead. It is a separate binary so the daemons' own command lines
// stay free of a probe mode.
//
//	cordon-healthcheck [URL]
//
// URL defaults to http://127.0.0.1:9101/healthz, the controller's
// --metrics-listen in the image. It exits 0 when the endpoint answers 2xx
// within --timeout, 1 when it answers anything else or not at all (the
// reason on stderr), 2 on bad arguments.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/cordonhq/cordon/internal/buildinfo"
)

// DefaultURL is the endpoint probed when no URL is given.
const DefaultURL = "http://127.0.0.1:9101/healthz"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cordon-healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: cordon-healthcheck [--timeout D] [URL]\n\nExits 0 when URL (default %s) answers 2xx, 1 otherwise.\n\n", DefaultURL)
		fs.PrintDefaults()
	}
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long (the health check counts that as a failure)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "cordon-healthcheck", buildinfo.Version())
		return 0
	}
	if fs.NArg() > 1 {
		fmt.Fprintf(stderr, "cordon-healthcheck: want at most one URL, got %d arguments\n", fs.NArg())
		return 2
	}
	target := DefaultURL
	if fs.NArg() == 1 {
		target = fs.Arg(0)
	}
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "cordon-healthcheck: %q is not an http(s) URL, e.g. %s\n", target, DefaultURL)
		return 2
	}
	if *timeout <= 0 {
		fmt.Fprintln(stderr, "cordon-healthcheck: --timeout must be positive")
		return 2
	}
	if err := probe(target, *timeout); err != nil {
		fmt.Fprintf(stderr, "cordon-healthcheck: unhealthy: %v\n", err)
		return 1
	}
	return 0
}

// probe GETs target and returns nil only for a 2xx answer.
func probe(target string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("build request for %s: %w", target, err)
	}
	// No proxy: the endpoint is the daemon beside us, never a proxy's.
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w (is the daemon running with its health endpoint on that address?)", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s: %s", target, resp.Status, body)
	}
	return nil
}
