package controlproto

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// InstanceID names one run of an agent process. It tells the other side
// that the process restarted and so lost the state it held only in memory
// (WireGuard sessions above all); it is not an identity and proves nothing.
type InstanceID string

// maxInstanceLen bounds an InstanceID a peer sends.
const maxInstanceLen = 64

// NewInstanceID returns a random InstanceID for a process start.
func NewInstanceID() (InstanceID, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("make instance ID: %w", err)
	}
	return InstanceID(hex.EncodeToString(b[:])), nil
}

// Valid reports whether id is a non-empty, printable ASCII instance ID of
// at most 64 bytes. Receivers ignore invalid ones (as unknown).
func (id InstanceID) Valid() bool {
	if id == "" || len(id) > maxInstanceLen {
		return false
	}
	for i := range len(id) {
		if c := id[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}
