package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/cordonhq/cordon/gateway/internal/witness"
)

// ackRollback is "cordon-gateway ack-audit-rollback": the operator's
// explicit acknowledgement, after the controller was restored from a
// backup, that its audit log went back. The gateway must be stopped.
func ackRollback(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cordon-gateway ack-audit-rollback", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", "/var/lib/cordon-gateway", "the gateway's state directory (stop the gateway first)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cordon-gateway ack-audit-rollback: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	held, moved, err := witness.Acknowledge(*stateDir, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "cordon-gateway ack-audit-rollback: %v\n", err)
		return 1
	}
	if held == nil && len(moved) == 0 {
		fmt.Fprintln(stdout, "this gateway holds no audit log checkpoint: nothing to acknowledge")
		return 0
	}
	if held != nil {
		fmt.Fprintf(stdout, "set aside the held audit log checkpoint: %d records, root %s, signed %s\n", held.Size, held.Root, held.Time.Format(time.RFC3339))
	}
	for _, m := range moved {
		fmt.Fprintf(stdout, "kept as %s (attach it to the incident record)\n", m)
	}
	fmt.Fprintln(stdout, "start the gateway: it pins the controller's restored audit log")
	return 0
}
