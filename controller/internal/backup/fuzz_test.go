package backup

import (
	"bytes"
	"io/fs"
	"strings"
	"testing"
)

// FuzzParseManifest: the manifest comes from a file anyone holding the
// age public key can write. Whatever it says, parsing returns an error or
// a manifest whose names stay inside the data dir.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"format":1,"time":"2026-12-04T15:00:00Z","controller_version":"dev","schema_version":14,"audit":{"size":0,"root":"","checkpoint":0},"files":[]}`))
	f.Add([]byte(`{"format":1,"schema_version":1,"audit":{"size":1,"root":"x","checkpoint":1},"files":[{"name":"../etc/passwd","size":1,"mode":384,"sha256":"` + strings.Repeat("a", 64) + `"}]}`))
	f.Add([]byte(`{"format":1,"schema_version":1,"audit":{},"files":[{"name":"cordon.db","size":1,"mode":384,"sha256":"` + strings.Repeat("a", 64) + `"},{"name":"ca.pem","size":1,"mode":420,"sha256":"` + strings.Repeat("b", 64) + `"},{"name":"audit-log.key","size":1,"mode":384,"sha256":"` + strings.Repeat("c", 64) + `"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseManifest(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, file := range m.Files {
			if checkName(file.Name) != nil || !fs.ValidPath(file.Name) || file.Mode&^0o644 != 0 {
				t.Fatalf("accepted %+v", file)
			}
		}
	})
}
