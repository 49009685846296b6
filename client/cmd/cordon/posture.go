package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// printPosture prints the posture lines of 'cordon status': each posture
// check this device fails that an app needs, the apps it costs, and what
// to do about it.
func printPosture(w io.Writer, findings []controlproto.PostureFinding) {
	for _, f := range findings {
		apps := "some apps"
		if len(f.Apps) > 0 {
			apps = strings.Join(f.Apps, ", ")
		}
		fmt.Fprintf(w, "Posture:     check %q fails, so %s cannot be reached. To fix: %s\n", f.Check, apps, f.Fix)
	}
}
