// Command cordonctl is the Cordon admin CLI: segments, apps, users, groups,
// rules, gateways, devices and the audit trail, over the controller's HTTPS
// API.
//
// Exit codes: 0 ok, 1 other error, 2 usage or invalid input, 3 not found,
// 4 conflict or in use, 5 unauthorized, 6 controller unreachable (see
// cordonctl --help).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/cordonhq/cordon/cordonctl/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, Getenv: os.Getenv})
	stop()
	os.Exit(code)
}
