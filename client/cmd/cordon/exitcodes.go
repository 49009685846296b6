package main

import (
	"errors"
	"net/http"

	"github.com/cordonhq/cordon/client/internal/client"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/agentstate"
)

// Exit codes, numbered as cordonctl's where the meaning is the same, so a
// script or a help-desk runbook can tell why a command failed.
const (
	exitOK           = 0
	exitError        = 1 // anything else
	exitUsage        = 2 // unknown command or flag, wrong arguments
	exitUnauthorized = 5 // the controller refused: wrong password or code, user disabled, device revoked
	exitUnreachable  = 6 // the controller cannot be reached
	exitNotSignedIn  = 8 // this device has not signed in yet: run 'cordon login'
)

const exitCodesHelp = `Exit codes:
  0  success
  1  any other error
  2  usage error (unknown command or flag, wrong arguments)
  5  the controller refused: wrong password or code, user disabled,
     device revoked (sign in again, or ask your IT department)
  6  the controller cannot be reached (network, VPN, firewall)
  8  this device has not signed in yet: run 'cordon login'`

// exitCode is the exit status for err; ran says a command's own code
// started (before that, an error is cobra's: a usage error).
func exitCode(err error, ran bool) int {
	var (
		ae *adminapi.Error
		ur *adminapi.UnreachableError
	)
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ur):
		return exitUnreachable
	case errors.Is(err, client.ErrSessionEnded): // device revoked while 'cordon up' ran
		return exitUnauthorized
	case errors.Is(err, agentstate.ErrNotEnrolled):
		return exitNotSignedIn
	case errors.As(err, &ae):
		switch {
		case ae.Code == adminapi.CodeUnauthorized, ae.Code == adminapi.CodeTokenInvalid, ae.Code == adminapi.CodeForbidden,
			ae.Status == http.StatusUnauthorized, ae.Status == http.StatusForbidden:
			return exitUnauthorized
		}
		return exitError
	case !ran:
		return exitUsage
	}
	return exitError
}
