// Package client is the clinician's Cordon client: it signs the user in,
// enrolls the device (keys made here, only public halves sent), brings the
// tunnel up with AllowedIPs limited to the apps the user is entitled to, and
// follows the maps the controller pushes.
package client

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/agentstate"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/enroll"
)

// LoginConfig configures Login.
type LoginConfig struct {
	StateDir   string
	Controller string
	CACert     string
	User       string
	Password   string
	TOTP       string
	// RecoveryCode, instead of TOTP: one of the user's one-time recovery
	// codes (with BreakGlass: one of the emergency account's sealed
	// one-time codes).
	RecoveryCode string
	// BreakGlass signs in with an emergency (break-glass) account;
	// Justification says why. The session is time-bound and reaches only
	// emergency apps, and the use is alerted and reviewed.
	BreakGlass    bool
	Justification string
}

// Login signs the user in and enrolls (or re-enrolls) this device.
// The controller, its CA and the user default to those of the device's
// last enrollment, so signing in again needs only 'cordon login'.
func Login(ctx context.Context, cfg LoginConfig) (*agentstate.Enrollment, error) {
	if last, _, err := agentstate.Recall(cfg.StateDir); err == nil {
		if cfg.Controller == "" {
			cfg.Controller = last.Controller
		}
		if cfg.User == "" && cfg.Controller == last.Controller {
			cfg.User = last.User
		}
	}
	if cfg.Controller == "" {
		return nil, errors.New("no controller given: pass --controller https://HOST:PORT (needed the first time this device signs in)")
	}
	if cfg.User == "" {
		return nil, errors.New("no user given: pass --user NAME")
	}
	return signIn(cfg.Controller, cfg.CACert, cfg.StateDir, cfg.User,
		func(old agentstate.Enrollment) bool { return old.User == cfg.User }, // same user, same device
		func(api *adminapi.Client, dev controlproto.DeviceEnroll) (*controlproto.EnrollResponse, error) {
			resp, err := api.Login(ctx, &controlproto.LoginRequest{
				Username: cfg.User, Password: cfg.Password, TOTP: cfg.TOTP, RecoveryCode: cfg.RecoveryCode,
				BreakGlass: cfg.BreakGlass, Justification: cfg.Justification, DeviceEnroll: dev,
			})
			if err != nil {
				return nil, fmt.Errorf("sign in: %w", err)
			}
			return resp, nil
		})
}

// signIn is what every sign-in does on the device: it loads (or makes) the
// device's keys, sends only their public halves with whatever proves the
// user (do), and saves the enrollment the controller answers with. The
// device keeps its ID when sameDevice says the last enrollment was this
// device's; csrName names the certificate request (the controller assigns
// the real identity).
func signIn(controller, caFile, stateDir, csrName string, sameDevice func(agentstate.Enrollment) bool,
	do func(api *adminapi.Client, dev controlproto.DeviceEnroll) (*controlproto.EnrollResponse, error)) (*agentstate.Enrollment, error) {
	caPEM, err := controllerCA(stateDir, controller, caFile)
	if err != nil {
		return nil, err
	}
	st, err := agentstate.Keys(stateDir)
	if err != nil {
		return nil, err
	}
	var deviceID string
	if old, err := agentstate.Load(stateDir); err == nil && sameDevice(old.Enrollment) {
		deviceID = old.Enrollment.ID
	}
	csr, err := st.CSR(csrName)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	api, err := adminapi.New(controller, "", caPEM)
	if err != nil {
		return nil, err
	}
	defer api.Close()
	resp, err := do(api, controlproto.DeviceEnroll{Hostname: host, PublicKey: st.WGKey.Public(), CSR: csr, DeviceID: deviceID})
	if err != nil {
		return nil, err
	}
	if err := enroll.Save(st, controller, caPEM, resp); err != nil {
		return nil, err
	}
	return &st.Enrollment, nil
}

// controllerCA is the CA to trust for controller: the file given, else the
// one this device pinned when it last enrolled with that controller.
func controllerCA(stateDir, controller, caFile string) ([]byte, error) {
	if caFile == "" {
		if last, ca, err := agentstate.Recall(stateDir); err == nil && last.Controller == controller {
			return ca, nil
		}
	}
	return enroll.ReadCA(caFile)
}

// ErrNotSignedIn is returned by what needs an enrollment on a device that
// has none. It is agentstate.ErrNotEnrolled (the exit code tells it apart).
var ErrNotSignedIn = fmt.Errorf("this device is not signed in: run 'cordon login' first (%w)", agentstate.ErrNotEnrolled)

// Logout ends this device's session at the controller: every gateway drops
// the device at once and a running tunnel reaches nothing until the next
// 'cordon login'. It reports whether a session was active.
func Logout(ctx context.Context, stateDir string) (bool, error) {
	st, err := agentstate.Load(stateDir)
	if errors.Is(err, agentstate.ErrNotEnrolled) {
		return false, ErrNotSignedIn
	} else if err != nil {
		return false, err
	}
	tc, err := st.ClientTLS("http/1.1")
	if err != nil {
		return false, err
	}
	api, err := adminapi.New(st.Enrollment.Controller, "", st.CAPEM)
	if err != nil {
		return false, err
	}
	defer api.Close()
	api.UseClientCertificate(tc.GetClientCertificate)
	ended, err := api.Logout(ctx)
	if err != nil {
		return false, fmt.Errorf("sign out: %w", err)
	}
	return len(ended) > 0, nil
}
