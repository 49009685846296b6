package backup

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/server"
)

// Format is the version of the backup's layout this build writes and
// reads.
const Format = 1

// manifestName is the archive's first entry.
const manifestName = "manifest.json"

// maxManifest bounds the manifest read before it is parsed.
const maxManifest = 1 << 20

// maxFiles bounds the number of files a manifest may list.
const maxFiles = 1024

// Manifest says what a backup holds. It is the archive's first entry;
// restore checks every file against it before the controller may start on
// the restored directory.
type Manifest struct {
	Format int       `json:"format"`
	Time   time.Time `json:"time"`               // when the database was copied
	Build  string    `json:"controller_version"` // the cordon-controller that made it
	// SchemaVersion is the database's schema version.
	SchemaVersion int    `json:"schema_version"`
	Audit         Audit  `json:"audit"`
	Files         []File `json:"files"`
}

// Audit is the audit log as the backup holds it.
type Audit struct {
	Size int64  `json:"size"` // records
	Root string `json:"root"` // tree hash at Size (tlog.Hash text); empty when Size is 0
	// Checkpoint is the size of the latest signed checkpoint; the
	// records after it are signed by the restored controller at start.
	Checkpoint int64 `json:"checkpoint"`
}

// File is one file of the data dir.
type File struct {
	Name   string      `json:"name"` // slash-separated, relative to the data dir
	Size   int64       `json:"size"`
	Mode   fs.FileMode `json:"mode"` // permission bits: 0600 or 0644
	SHA256 string      `json:"sha256"`
}

// parseManifest reads and checks a manifest: strict JSON (unknown fields
// refused), this Format, and files restore can write safely (a clean
// relative name inside the data dir, once each, a mode of 0600 or 0644).
func parseManifest(r io.Reader) (*Manifest, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxManifest+1))
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	if len(b) > maxManifest {
		return nil, fmt.Errorf("manifest larger than %d bytes", maxManifest)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parse manifest: data after the manifest")
	}
	if m.Format != Format {
		return nil, fmt.Errorf("backup format %d, this cordon-controller reads %d: restore with the version that made it (%q)", m.Format, Format, m.Build)
	}
	if m.SchemaVersion < 1 {
		return nil, fmt.Errorf("manifest: schema version %d", m.SchemaVersion)
	}
	if m.Audit.Size < 0 || m.Audit.Checkpoint < 0 || m.Audit.Checkpoint > m.Audit.Size || (m.Audit.Size > 0) == (m.Audit.Root == "") {
		return nil, fmt.Errorf("manifest: audit log size %d, checkpoint %d, root %q do not fit together", m.Audit.Size, m.Audit.Checkpoint, m.Audit.Root)
	}
	if len(m.Files) > maxFiles {
		return nil, fmt.Errorf("manifest lists %d files, more than %d", len(m.Files), maxFiles)
	}
	seen := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		if err := checkName(f.Name); err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
		if seen[f.Name] {
			return nil, fmt.Errorf("manifest: %q listed twice", f.Name)
		}
		seen[f.Name] = true
		if f.Size < 0 {
			return nil, fmt.Errorf("manifest: %q has size %d", f.Name, f.Size)
		}
		// Secrets are 0600; only the public certificates may be 0644.
		if f.Mode != 0o600 && (f.Mode != 0o644 || ca.Files[f.Name] != 0o644) {
			return nil, fmt.Errorf("manifest: %q has mode %#o: only 0600, or 0644 for a certificate", f.Name, f.Mode)
		}
		if len(f.SHA256) != 64 {
			return nil, fmt.Errorf("manifest: %q has no SHA-256", f.Name)
		}
	}
	for _, need := range required {
		if !seen[need] {
			return nil, fmt.Errorf("manifest: %s is missing: the backup cannot run a controller", need)
		}
	}
	return &m, nil
}

// checkName accepts a clean relative path: a file of the data dir or of
// its SIEM cursor directory.
func checkName(name string) error {
	dir, file := path.Split(name)
	if name == "" || name != path.Clean(name) || !fs.ValidPath(name) || file == manifestName ||
		(dir != "" && dir != server.SIEMDir+"/") || strings.ContainsAny(name, "\\\x00") {
		return fmt.Errorf("file name %q is not a plain name inside the data dir", name)
	}
	return nil
}
