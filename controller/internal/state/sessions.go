package state

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/audit"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// This file: sign-ins (device enrollment and session start), session ends,
// device revocation and gateway enrollment.

// Refusal kinds of sign-ins and enrollments, for the API's answers.
var (
	// ErrDeviceRevoked: the device signing in was revoked by an admin.
	ErrDeviceRevoked = errors.New("device revoked")
	// ErrSignInFailed: the user vanished meanwhile; answered like a wrong
	// credential.
	ErrSignInFailed = errors.New("sign-in failed")
)

// idAttempts bounds retries when a random ID collides.
const idAttempts = 3

// NewID returns prefix followed by 40 random bits in hex.
func NewID(prefix string) string {
	var b [5]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// SignIn is a verified sign-in: every factor was checked by the caller.
type SignIn struct {
	User     string
	DeviceID string // the device signing in again; "" enrolls a new one
	Hostname string
	Key      wgkey.Public
	Method   string // "password+totp", "recovery-code", "oidc:<idp>"
	MFA      bool   // a second factor was proven now
	Source   string // the client's address
	// RecoveryCode is the hash of the recovery code the user signs in
	// with (nil: none); it is used up in the sign-in's transaction, so a
	// sign-in that fails later does not burn it.
	RecoveryCode []byte
	// BreakGlass, if set, makes this an emergency access sign-in of a
	// break-glass account (breakglass.go): RecoveryCode is then one of
	// its sealed one-time codes, and required.
	BreakGlass *BreakGlass
}

// SignedIn is what a sign-in made.
type SignedIn struct {
	Device  store.Device
	Session store.Session
	Cert    string // the device certificate (PEM)
}

// SignIn enrolls the device (or updates the user's existing one), starts
// its session (ending the device's previous one) and issues its
// certificate with issue, in one transaction with the auth.login,
// enroll.device, session.end and session.start records: a device never
// exists without its records, nor a session without its certificate.
func (s *State) SignIn(ctx context.Context, in SignIn, issue func(deviceID string) (string, error)) (SignedIn, error) {
	var out SignedIn
	o := Origin{Actor: "user:" + in.User}
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		left := -1
		if in.BreakGlass != nil && (in.RecoveryCode == nil || in.BreakGlass.For <= 0) {
			return errors.New("state: break-glass sign-in without a one-time code or time bound (a bug)")
		}
		if in.RecoveryCode != nil {
			var err error
			left, err = tx.UseRecoveryCode(ctx, in.User, in.RecoveryCode, op.at)
			if errors.Is(err, store.ErrTokenInvalid) {
				return refuse(store.ErrTokenInvalid, "recovery code already used")
			} else if err != nil {
				return err
			}
			if in.BreakGlass == nil { // auth.break_glass says it for a break-glass code
				op.success(audit.AuthRecoveryCode, in.User, map[string]string{"source": in.Source, "device": in.DeviceID, "remaining": strconv.Itoa(left)})
			}
		}
		dev, err := enrollDevice(ctx, tx, in, op.at)
		if err != nil {
			return err
		}
		sess := store.Session{ID: NewID("ses-"), DeviceID: dev.ID, User: in.User, Method: in.Method, Source: in.Source, StartedAt: op.at}
		if in.MFA {
			sess.MFAAt = op.at
		}
		if in.BreakGlass != nil {
			if err := startBreakGlass(ctx, tx, op, in, &sess, left); err != nil {
				return err
			}
		}
		replaced, err := tx.StartSession(ctx, sess)
		if errors.Is(err, store.ErrDisabled) {
			// Disabled after the caller's check: the store refuses the
			// session in the same transaction that reads the user.
			return refuse(store.ErrDisabled, "account %q is disabled: contact your administrator", in.User)
		} else if err != nil {
			return fmt.Errorf("start session for device %s: %w", dev.ID, err)
		}
		cert, err := issue(dev.ID)
		if err != nil {
			return fmt.Errorf("issue certificate for device %s: %w", dev.ID, err)
		}
		op.success(audit.AuthLogin, in.User, map[string]string{"source": in.Source, "device": dev.ID, "method": in.Method})
		op.success(audit.EnrollDevice, dev.ID, map[string]string{"source": in.Source, "hostname": dev.Hostname, "overlay_addr": dev.OverlayAddr.String()})
		op.sessionsEnded(replaced, "")
		op.success(audit.SessionStart, sess.ID, map[string]string{"source": in.Source, "device": dev.ID, "method": in.Method, "mfa": strconv.FormatBool(in.MFA)})
		op.change.Devices = append(op.change.Devices, dev.ID)
		out = SignedIn{Device: dev, Session: sess, Cert: cert}
		return nil
	})
	if err == nil && in.BreakGlass != nil {
		// The audit record is the alert the SIEM forwards; this is the
		// same alert for whoever watches the controller's log.
		s.log.ErrorContext(ctx, "BREAK-GLASS emergency access used: two admins must review it (cordonctl breakglass list)",
			"use", out.Session.BreakGlass, "user", in.User, "device", out.Device.ID, "source", in.Source,
			"justification", in.BreakGlass.Justification, "expires_at", out.Session.ExpiresAt)
	}
	return out, err
}

// enrollDevice creates the device, or updates the user's existing device
// when the sign-in names one. A key a quarantined device holds enrolls
// nowhere else: re-enrolling it, or moving it onto another device, would
// end the quarantine.
func enrollDevice(ctx context.Context, tx store.Store, in SignIn, at time.Time) (store.Device, error) {
	if err := keyQuarantined(ctx, tx, in.Key, in.DeviceID); err != nil {
		return store.Device{}, err
	}
	if in.DeviceID != "" {
		d, err := tx.GetDevice(ctx, in.DeviceID)
		if errors.Is(err, store.ErrNotFound) || err == nil && d.User != in.User {
			// Another user's device looks exactly like a missing one.
			return d, refuse(store.ErrNotFound, "device %q not found for user %q: log in without a device ID to enroll a new device", clip(in.DeviceID), in.User)
		}
		if err != nil {
			return d, err
		}
		if !d.RevokedAt.IsZero() {
			return d, refuse(ErrDeviceRevoked,
				"device %q was revoked by an administrator on %s and cannot sign in again; to enroll this computer as a new device, remove the client's state directory (it holds the revoked keys) and sign in again, if your administrator agrees",
				d.ID, d.RevokedAt.Format(time.RFC3339))
		}
		d.PublicKey, d.Hostname = in.Key, in.Hostname
		if in.MFA {
			d.MFAAt = at
		}
		switch err := tx.UpdateDevice(ctx, d); {
		case errors.Is(err, store.ErrNotFound):
			return d, refuse(store.ErrNotFound, "device %q was removed meanwhile: sign in again", d.ID)
		case errors.Is(err, store.ErrAlreadyExists):
			return d, refuse(store.ErrAlreadyExists, "this WireGuard public key is already enrolled for another device")
		case err != nil:
			return d, err
		}
		return d, nil
	}
	var d store.Device
	var err error
	for range idAttempts {
		nd := store.Device{ID: NewID("dev-"), User: in.User, Hostname: in.Hostname, PublicKey: in.Key, CreatedAt: at}
		if in.MFA {
			nd.MFAAt = at
		}
		d, err = tx.CreateDevice(ctx, nd)
		if !errors.Is(err, store.ErrAlreadyExists) {
			break
		}
	}
	switch {
	case errors.Is(err, store.ErrAlreadyExists):
		return d, refuse(store.ErrAlreadyExists, "this WireGuard public key is already enrolled: log in with that device's ID, or generate a new key")
	case errors.Is(err, store.ErrAddrExhausted):
		return d, refuse(ErrConflict, "the overlay address pool is exhausted")
	case errors.Is(err, store.ErrNotFound):
		return d, refuse(ErrSignInFailed, "the user was deleted meanwhile")
	}
	return d, err
}

// EndSessions ends the active sessions f selects for reason (an End*
// value), each with its session.end record (comment: the admin's, may be
// empty). Ending none is not an error.
func (s *State) EndSessions(ctx context.Context, o Origin, f store.SessionFilter, reason, comment string) ([]store.Session, error) {
	var ended []store.Session
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		var err error
		ended, err = tx.EndSessions(ctx, f, op.at, reason)
		if err != nil {
			return err
		}
		if len(ended) == 0 {
			if f.ID != "" {
				if _, err := tx.GetSession(ctx, f.ID); errors.Is(err, store.ErrNotFound) {
					return refuse(store.ErrNotFound, "session %q not found (cordonctl session list)", clip(f.ID))
				}
			}
			return errNothing
		}
		op.sessionsEnded(ended, comment)
		return nil
	})
	if errors.Is(err, errNothing) {
		return nil, nil
	}
	return ended, err
}

// errNothing rolls back a mutation that found nothing to change: no record
// of a non-event (and the request ID stays unclaimed).
var errNothing = errors.New("nothing to change")

// Logout ends the active session of the device signing out. The actor is
// its user (the device's, if it had no session).
func (s *State) Logout(ctx context.Context, deviceID string) ([]store.Session, error) {
	var ended []store.Session
	_, err := s.apply(ctx, Origin{Actor: "device:" + deviceID}, func(ctx context.Context, tx store.Store, op *op) error {
		var err error
		ended, err = tx.EndSessions(ctx, store.SessionFilter{DeviceID: deviceID}, op.at, store.EndLogout)
		if err != nil {
			return err
		}
		if len(ended) == 0 {
			return errNothing
		}
		op.origin.Actor = "user:" + ended[0].User
		op.sessionsEnded(ended, "")
		return nil
	})
	if errors.Is(err, errNothing) {
		return nil, nil
	}
	return ended, err
}

// RevokeDevice revokes a device for good (it stays listed for the access
// review) and ends its sessions.
func (s *State) RevokeDevice(ctx context.Context, o Origin, id string) (store.Device, error) {
	var d store.Device
	_, err := s.apply(ctx, o, func(ctx context.Context, tx store.Store, op *op) error {
		ended, err := tx.RevokeDevice(ctx, id, op.at)
		if errors.Is(err, store.ErrNotFound) {
			return refuse(store.ErrNotFound, "device %q not found (cordonctl device list)", clip(id))
		} else if err != nil {
			return err
		}
		op.success(audit.AdminDeviceRevoke, id, nil)
		op.sessionsEnded(ended, "")
		op.change.Devices = append(op.change.Devices, id)
		d, err = tx.GetDevice(ctx, id)
		return err
	})
	return d, err
}

// EnrollGateway redeems a gateway enrollment token (its hash) and creates
// the gateway with a new ID, issuing its certificate with issue, in one
// transaction with its enroll.gateway record: a spent token always has its
// gateway, and the gateway its certificate.
func (s *State) EnrollGateway(ctx context.Context, tokenHash []byte, gw store.Gateway, source string, issue func(id string) (string, error)) (store.Gateway, string, error) {
	var cert string
	_, err := s.apply(ctx, Origin{}, func(ctx context.Context, tx store.Store, op *op) error {
		var err error
		in := gw
		for range idAttempts {
			in.ID, in.CreatedAt = NewID("gw-"), op.at
			gw, err = tx.RedeemEnrollToken(ctx, tokenHash, op.at, in)
			if !errors.Is(err, store.ErrAlreadyExists) {
				break
			}
		}
		switch {
		case errors.Is(err, store.ErrTokenInvalid):
			return refuse(store.ErrTokenInvalid, "token invalid, used or expired")
		case errors.Is(err, store.ErrAlreadyExists):
			return refuse(store.ErrAlreadyExists, "a gateway with this name or public key is already enrolled: delete it first (cordonctl gateway delete) or use a new key")
		case errors.Is(err, store.ErrAddrExhausted):
			return refuse(ErrConflict, "the overlay address pool is exhausted")
		case err != nil:
			return err
		}
		if cert, err = issue(gw.ID); err != nil {
			return fmt.Errorf("issue certificate for gateway %s: %w", gw.ID, err)
		}
		op.origin.Actor = "gateway:" + gw.ID
		op.success(audit.EnrollGateway, gw.Name, map[string]string{"source": source, "segment": gw.Segment, "overlay_addr": gw.OverlayAddr.String()})
		op.change.Gateways = []string{gw.ID}
		op.change.Segments = []string{gw.Segment}
		return nil
	})
	return gw, cert, err
}

// ExpireSession ends one session that reached a limit (idle or absolute:
// the automatic logoff of 164.312(a)(2)(iii)) at `at`, with its
// session.end record. It returns what it ended: nothing if the session
// had ended meanwhile.
func (s *State) ExpireSession(ctx context.Context, id string, at time.Time, reason string, lastActivity time.Time) ([]store.Session, error) {
	var ended []store.Session
	_, err := s.apply(ctx, Origin{Actor: "controller"}, func(ctx context.Context, tx store.Store, op *op) error {
		var err error
		ended, err = tx.EndSessions(ctx, store.SessionFilter{ID: id}, at, reason)
		if err != nil {
			return err
		}
		if len(ended) == 0 {
			return errNothing
		}
		for _, e := range ended {
			op.record(store.AuditEvent{Time: e.EndedAt, Type: audit.SessionEnd, Outcome: "success", Subject: e.ID,
				Details: map[string]string{"device": e.DeviceID, "user": e.User, "reason": e.EndReason,
					"last_activity": lastActivity.UTC().Format(time.RFC3339)}})
			op.change.Devices = append(op.change.Devices, e.DeviceID)
		}
		return nil
	})
	if errors.Is(err, errNothing) {
		return nil, nil
	}
	return ended, err
}

// TouchSessions stores the sessions' latest activity (bookkeeping: the
// gateways' reports, batched).
func (s *State) TouchSessions(ctx context.Context, batch map[string]time.Time) error {
	_, err := s.apply(ctx, Origin{}, func(ctx context.Context, tx store.Store, op *op) error {
		op.bookkeeping = true
		return tx.TouchSessions(ctx, batch)
	})
	return err
}
