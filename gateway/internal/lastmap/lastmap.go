// Package lastmap keeps the last map the controller pushed to a gateway on
// disk, so that a gateway restarting while the controller is unreachable
// serves its clinicians from it (fail static) until the map's validity
// ends (fail closed).
//
// The file (0600, replaced through package atomicfile, so a crash leaves
// the old file or the new one) holds the record and an
// HMAC-SHA256 over its exact bytes under a key of its own (a second 0600
// file beside it). A torn, corrupted or edited file fails the check and is
// ignored: the gateway then starts with no peers and waits for the
// controller. The key is no secret from root on the gateway host (nothing
// is); it stops a file from another gateway, a backup of an older map, or
// a hand edit of the validity from being served.
package lastmap

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/cordonhq/cordon/pkg/atomicfile"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/secretfile"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// File names in the state directory.
const (
	MapFile = "last-map.json"
	KeyFile = "last-map.key"
)

// ErrNone says no map was saved yet.
var ErrNone = errors.New("no saved map")

// ErrIntegrity says the file does not pass its integrity check.
var ErrIntegrity = errors.New("saved map fails its integrity check (torn write, corruption or edit)")

// Record is what is saved.
type Record struct {
	Map *controlproto.GatewayMap `json:"map"`
	// ValidUntil is when the map stops granting anything, unless the
	// controller was heard from since.
	ValidUntil time.Time `json:"valid_until"`
	SavedAt    time.Time `json:"saved_at"`
	// Endpoints are where the peers that handshook recently were last
	// seen, so a restarted gateway can handshake with them first.
	Endpoints map[wgkey.Public]netip.AddrPort `json:"endpoints,omitempty"`
}

// maxFile bounds what Load reads (a map is at most one control frame).
const maxFile = controlproto.MaxFrameSize + 4096

type envelope struct {
	Version int             `json:"version"`
	MAC     []byte          `json:"mac"`
	Record  json.RawMessage `json:"record"`
}

// Store reads and writes the saved map of one state directory.
type Store struct {
	dir string
	key []byte
}

// Open returns the store of dir, creating its key on first use.
func Open(dir string) (*Store, error) {
	kp := filepath.Join(dir, KeyFile)
	key, err := secretfile.LoadOrCreate(kp, 32)
	if err != nil {
		return nil, fmt.Errorf("the saved map's key: %w (delete it and %s: the gateway writes both anew)", err, MapFile)
	}
	return &Store{dir: dir, key: key}, nil
}

// Save replaces the saved record.
func (s *Store) Save(r Record) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode the map to save: %w", err)
	}
	b, err := json.Marshal(envelope{Version: 1, MAC: s.mac(raw), Record: raw})
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(s.dir, MapFile), b, 0o600); err != nil {
		return fmt.Errorf("save the last map: %w", err)
	}
	return nil
}

// Load returns the saved record; ErrNone if there is none, ErrIntegrity
// (wrapped) if it does not check out.
func (s *Store) Load() (Record, error) {
	f, err := os.Open(filepath.Join(s.dir, MapFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Record{}, ErrNone
	}
	if err != nil {
		return Record{}, fmt.Errorf("read the saved map: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return Record{}, fmt.Errorf("read the saved map: %w", err)
	}
	if len(b) > maxFile {
		return Record{}, fmt.Errorf("%w: larger than %d bytes", ErrIntegrity, maxFile)
	}
	return s.decode(b)
}

// Remove deletes the saved map (a revoked gateway's). Nothing saved is
// not an error.
func (s *Store) Remove() error {
	if err := os.Remove(filepath.Join(s.dir, MapFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the saved map: %w", err)
	}
	return nil
}

func (s *Store) decode(b []byte) (Record, error) {
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrIntegrity, err)
	}
	if env.Version != 1 {
		return Record{}, fmt.Errorf("%w: version %d", ErrIntegrity, env.Version)
	}
	if !hmac.Equal(env.MAC, s.mac(env.Record)) {
		return Record{}, fmt.Errorf("%w: MAC mismatch", ErrIntegrity)
	}
	var r Record
	if err := json.Unmarshal(env.Record, &r); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrIntegrity, err)
	}
	if r.Map == nil || r.ValidUntil.IsZero() {
		return Record{}, fmt.Errorf("%w: no map or no validity", ErrIntegrity)
	}
	return r, nil
}

func (s *Store) mac(b []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("cordon gateway last map v1\x00"))
	m.Write(b)
	return m.Sum(nil)
}
