// Package buildinfo is the version the four binaries report (--version,
// the agents' hello, `gateway list`), stamped at build time:
//
//	go build -ldflags "-X github.com/cordonhq/cordon/internal/buildinfo.version=v1.2.3"
//
// (the Makefile and Dockerfile do). A build without it reports the module
// version or VCS revision Go recorded, or "dev".
package buildinfo

import "runtime/debug"

var version = ""

// Version is the build's version.
func Version() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" {
		return "dev"
	}
	return "dev-" + rev + dirty
}
