package review

import (
	"slices"
	"testing"
)

// FuzzParseScope: any scope string from an API body is read or refused,
// never a panic, and what is read prints back as given.
func FuzzParseScope(f *testing.F) {
	for _, s := range []string{"phi", "app:ehr", "group:clinicians", "segment:clinical", "app:", ":x", "user:alice", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := ParseScope(s)
		if err == nil && sc.String() != s {
			t.Fatalf("ParseScope(%q) = %+v, which prints as %q", s, sc, sc.String())
		}
	})
}

// FuzzNarrowDenied: any line ports and kept ports (a reviewer's) are
// refused or give a non-empty subset of the line's ports that excludes
// every kept one, never a panic.
func FuzzNarrowDenied(f *testing.F) {
	f.Add("tcp/443, tcp/8443", "tcp/443")
	f.Add("tcp/443", "tcp/443")
	f.Add("udp/5000-5010, icmp", "icmp")
	f.Add(",,", ",")
	f.Fuzz(func(t *testing.T, ports, keep string) {
		denied, err := NarrowDenied(ports, keep)
		if err != nil {
			return
		}
		have, kept := splitServices(ports), splitServices(keep)
		if len(denied) == 0 {
			t.Fatalf("NarrowDenied(%q, %q) denies nothing", ports, keep)
		}
		for _, d := range denied {
			if !slices.Contains(have, d) || slices.Contains(kept, d) {
				t.Fatalf("NarrowDenied(%q, %q) = %v: %q is not a line port left out", ports, keep, denied, d)
			}
		}
	})
}
