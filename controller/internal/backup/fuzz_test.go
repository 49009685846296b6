package backup

import (
	"bytes"
	"fmt"
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
			if checkName(file.Name) != nil || !fs.ValidPath(file.Name) || file.Mode != 0o600 && file.Name != "ca.pem" && file.Name != "server.pem" {
				t.Fatalf("accepted %+v", file)
			}
		}
	})
}

// The manifest's checks, one refusal each.
func TestParseManifest(t *testing.T) {
	file := func(name string, mode int) string {
		return fmt.Sprintf(`{"name":%q,"size":1,"mode":%d,"sha256":"%s"}`, name, mode, strings.Repeat("a", 64))
	}
	base := []string{file("cordon.db", 0o600), file("ca.pem", 0o644), file("audit-log.key", 0o600), file("siem/soc.cursor", 0o600)}
	manifest := func(format int, files ...string) string {
		return fmt.Sprintf(`{"format":%d,"schema_version":14,"audit":{"size":0,"root":"","checkpoint":0},"files":[%s]}`, format, strings.Join(files, ","))
	}
	if _, err := parseManifest(strings.NewReader(manifest(Format, base...))); err != nil {
		t.Fatalf("a good manifest: %v", err)
	}
	for _, tc := range []struct{ name, in, want string }{
		{"other format", manifest(2, base...), "format 2"},
		{"unknown field", strings.Replace(manifest(Format, base...), `"format"`, `"extra":1,"format"`, 1), "unknown field"},
		{"path out of the dir", manifest(Format, append(base, file("../etc/cron.d/x", 0o600))...), "not a plain name"},
		{"another directory", manifest(Format, append(base, file("etc/x", 0o600))...), "not a plain name"},
		{"absolute path", manifest(Format, append(base, file("/etc/passwd", 0o600))...), "not a plain name"},
		{"key readable by others", manifest(Format, append(base, file("ca-key.pem", 0o644))...), "only 0600"},
		{"executable", manifest(Format, append(base, file("x", 0o755))...), "only 0600"},
		{"twice", manifest(Format, append(base, file("ca.pem", 0o644))...), "twice"},
		{"signing key missing", manifest(Format, base[:2]...), "audit-log.key is missing"},
		{"audit root without records", strings.Replace(manifest(Format, base...), `"root":""`, `"root":"x"`, 1), "do not fit"},
	} {
		if _, err := parseManifest(strings.NewReader(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}
