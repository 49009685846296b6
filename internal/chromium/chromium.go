// Package chromium finds a Chromium executable on PATH: for cordonctl's
// PDF reports and for the tests that drive a real browser.
package chromium

import (
	"errors"
	"os/exec"
)

// Names are the executables Find looks for, in order (Debian's chromium
// first).
var Names = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// ErrNotFound is Find's error when none is installed.
var ErrNotFound = errors.New("no Chromium found on PATH (looked for chromium, chromium-browser, google-chrome): install it (Debian: apt-get install chromium)")

// Find returns the path of the first of Names on PATH.
func Find() (string, error) {
	for _, name := range Names {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", ErrNotFound
}
