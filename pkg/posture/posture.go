// Package posture is the device posture report a client sends and the
// controller evaluates: operating system and version, kernel, disk
// encryption of the root filesystem, firewall, screen lock, on mobile
// devices the OS's integrity verdict (not rooted or jailbroken), and client
// version. Every field is self-reported by the device and recorded as such;
// the controller treats the report as untrusted input ([Decode] bounds and
// validates it).
package posture

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode"
)

// State is the outcome of one check. Unknown means the client could not
// tell (not supported, no permission); policies decide whether unknown
// passes.
type State string

// States.
const (
	Yes     State = "yes"
	No      State = "no"
	Unknown State = "unknown"
)

// Check is one boolean posture check and, when not Yes, why.
type Check struct {
	State  State  `json:"state"`
	Detail string `json:"detail,omitempty"` // e.g. "root on dm-crypt (dm-0)", "no input chain"
}

// Report is what a device says about itself.
type Report struct {
	CollectedAt    time.Time `json:"collected_at"`
	OS             string    `json:"os"`         // os-release ID, e.g. "debian"
	OSVersion      string    `json:"os_version"` // os-release VERSION_ID, e.g. "12"
	OSName         string    `json:"os_name"`    // PRETTY_NAME
	Kernel         string    `json:"kernel"`
	DiskEncryption Check     `json:"disk_encryption"`
	Firewall       Check     `json:"firewall"`
	ScreenLock     Check     `json:"screen_lock"`
	// Integrity is the OS's own word that the device is not rooted or
	// jailbroken (Android Play Integrity, an iOS jailbreak check), as a
	// mobile shell reports it; empty when the device reports none.
	Integrity     Check  `json:"integrity,omitzero"`
	ClientVersion string `json:"client_version"`
}

// MaxSize bounds an encoded report.
const MaxSize = 16 << 10

const maxField = 256

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid posture report")

// Validate checks bounds and formats; it does not judge compliance.
func (r *Report) Validate(now time.Time) error {
	if r.CollectedAt.IsZero() {
		return fmt.Errorf("%w: collected_at missing", ErrInvalid)
	}
	if r.CollectedAt.After(now.Add(5 * time.Minute)) {
		return fmt.Errorf("%w: collected_at %s is in the future", ErrInvalid, r.CollectedAt.Format(time.RFC3339))
	}
	for name, v := range map[string]string{
		"os": r.OS, "os_version": r.OSVersion, "os_name": r.OSName, "kernel": r.Kernel, "client_version": r.ClientVersion,
		"disk_encryption.detail": r.DiskEncryption.Detail, "firewall.detail": r.Firewall.Detail, "screen_lock.detail": r.ScreenLock.Detail,
		"integrity.detail": r.Integrity.Detail,
	} {
		if err := text(v); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrInvalid, name, err)
		}
	}
	for name, c := range map[string]Check{"disk_encryption": r.DiskEncryption, "firewall": r.Firewall, "screen_lock": r.ScreenLock} {
		switch c.State {
		case Yes, No, Unknown:
		default:
			return fmt.Errorf("%w: %s.state %q: want yes, no or unknown", ErrInvalid, name, c.State)
		}
	}
	switch r.Integrity.State {
	case Yes, No, Unknown:
	case "":
		if r.Integrity.Detail != "" {
			return fmt.Errorf("%w: integrity.detail without integrity.state", ErrInvalid)
		}
	default:
		return fmt.Errorf("%w: integrity.state %q: want yes, no or unknown (or no integrity at all)", ErrInvalid, r.Integrity.State)
	}
	return nil
}

func text(s string) error {
	if len(s) > maxField {
		return fmt.Errorf("longer than %d bytes", maxField)
	}
	for _, r := range s {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			return errors.New("contains a control or invalid character")
		}
	}
	return nil
}

// Decode reads one report strictly: size-limited, unknown fields rejected,
// then validated.
func Decode(r io.Reader, now time.Time) (*Report, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read posture report: %w", err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var rep Report
	if err := dec.Decode(&rep); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the report", ErrInvalid)
	}
	if err := rep.Validate(now); err != nil {
		return nil, err
	}
	return &rep, nil
}
