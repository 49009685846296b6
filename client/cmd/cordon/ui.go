package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/client/internal/ui"
	"github.com/cordonhq/cordon/pkg/oidcflow"
)

// uiCommand is 'cordon ui': the local status page (client/internal/ui).
func uiCommand(stateDir *string, logger func() *slog.Logger) *cobra.Command {
	var listen string
	var open bool
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Open the status page: who is signed in, time left, each app and why it is or is not reachable, sign in",
		Long: "Serve the status page on this computer only (a loopback address) until Ctrl-C.\n\n" +
			"It prints a link that works once, in the first browser that opens it; run 'cordon ui' again for a new one.\n" +
			"The page reads the tunnel 'cordon up' runs (same --state-dir) and signs in as 'cordon login' does.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if open && os.Geteuid() == 0 {
				return errors.New("--open would start a browser as root: open the printed link in your own browser instead")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			srv, err := startUI(*stateDir, listen, cmd.OutOrStdout(), logger())
			if err != nil {
				return err
			}
			var browser sync.WaitGroup
			defer browser.Wait()
			if open { // best effort: the link is printed
				browser.Go(func() { oidcflow.OpenBrowser(ctx, nil, srv.URL()) })
			}
			return srv.Serve(ctx)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "loopback address and port of the page (port 0: any free port)")
	cmd.Flags().BoolVar(&open, "open", false, "also open the page in the browser ($BROWSER, else xdg-open)")
	return cmd
}

// startUI listens for the status page of stateDir's tunnel and prints its
// start link to out.
func startUI(stateDir, listen string, out io.Writer, log *slog.Logger) (*ui.Server, error) {
	srv, err := ui.Listen(listen, ui.Config{
		Tunnel: ui.LocalTunnel{StateDir: stateDir}, SignIn: ui.ClientSignIn{StateDir: stateDir},
		Out: out, Logger: log.With("component", "ui"),
	})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "Cordon status page (this computer only; the link works once):\n\n  %s\n\n", srv.URL())
	return srv, nil
}

// serveUI runs the status page beside 'cordon up --ui' until ctx ends; the
// returned func waits for it.
func serveUI(ctx context.Context, srv *ui.Server, log *slog.Logger) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ctx); err != nil {
			log.Warn("status page stopped", "err", err)
		}
	}()
	return func() { <-done }
}
