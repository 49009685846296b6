package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cordonhq/cordon/client/internal/client"
)

// A device revoked while 'cordon up' runs ends Up with ErrSessionEnded:
// that is the controller refusing the device, exit 5 like cordonctl.
func TestExitCodeDeviceRevokedDuringUp(t *testing.T) {
	err := fmt.Errorf("%w (%v)", client.ErrSessionEnded, errors.New("device revoked"))
	if got := exitCode(err, true); got != exitUnauthorized {
		t.Fatalf("exitCode(revoked during up) = %d, want %d", got, exitUnauthorized)
	}
}
