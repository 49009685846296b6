// Package secretfile keeps a random key in a file: read it, or on first use
// make one and write it (mode 0600, atomically, so a crash leaves either no
// file or the whole key).
package secretfile

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/cordonhq/cordon/pkg/atomicfile"
)

// LoadOrCreate returns the n-byte key in path, creating it on first use.
// A file of another length is an error that names it (what to do about it
// depends on what the key protects, so the caller's message says).
func LoadOrCreate(path string, n int) ([]byte, error) {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		b = make([]byte, n)
		rand.Read(b)
		if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("create key %s: %w", path, err)
		}
		return b, nil
	case err != nil:
		return nil, fmt.Errorf("read key %s: %w", path, err)
	case len(b) != n:
		return nil, fmt.Errorf("key %s is %d bytes, want %d", path, len(b), n)
	}
	return b, nil
}
