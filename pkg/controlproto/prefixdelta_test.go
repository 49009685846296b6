package controlproto

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

func TestApplyPrefixes(t *testing.T) {
	old := prefixes("10.0.0.1/32", "10.0.0.3/32", "10.1.0.0/16")
	for _, tc := range []struct {
		name     string
		d        PrefixDelta
		want     []netip.Prefix
		wantFail bool
	}{
		{name: "add first, middle, last", d: PrefixDelta{Add: prefixes("10.2.0.0/16", "10.0.0.0/32", "10.0.0.2/32")},
			want: prefixes("10.0.0.0/32", "10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32", "10.1.0.0/16", "10.2.0.0/16")},
		{name: "remove and add", d: PrefixDelta{Add: prefixes("10.0.0.2/32"), Remove: prefixes("10.1.0.0/16", "10.0.0.1/32")},
			want: prefixes("10.0.0.2/32", "10.0.0.3/32")},
		{name: "remove all", d: PrefixDelta{Remove: old}, want: nil},
		{name: "add one there", d: PrefixDelta{Add: prefixes("10.0.0.3/32")}, wantFail: true},
		{name: "remove one not there", d: PrefixDelta{Remove: prefixes("10.0.0.2/32")}, wantFail: true},
		{name: "remove one past the end", d: PrefixDelta{Remove: prefixes("10.9.0.0/16")}, wantFail: true},
		{name: "add and remove the same", d: PrefixDelta{Add: prefixes("10.0.0.2/32"), Remove: prefixes("10.0.0.2/32")}, wantFail: true},
		{name: "add twice", d: PrefixDelta{Add: prefixes("10.0.0.2/32", "10.0.0.2/32")}, wantFail: true},
		{name: "invalid", d: PrefixDelta{Add: []netip.Prefix{{}}}, wantFail: true},
	} {
		got, err := applyPrefixes(old, &tc.d)
		if tc.wantFail {
			if !errors.Is(err, ErrBadDelta) {
				t.Errorf("%s: got %v, %v; want ErrBadDelta", tc.name, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	if _, err := applyPrefixes(prefixes("10.0.0.3/32", "10.0.0.1/32"), &PrefixDelta{}); !errors.Is(err, ErrBadDelta) {
		t.Errorf("unsorted old list: %v, want ErrBadDelta", err)
	}
	if !slices.Equal(old, prefixes("10.0.0.1/32", "10.0.0.3/32", "10.1.0.0/16")) {
		t.Error("applyPrefixes changed its input")
	}
}

// FuzzApplyPrefixes: any delta of bytes from the wire gives the list it
// describes or ErrBadDelta; a list that comes back is sorted and unique.
func FuzzApplyPrefixes(f *testing.F) {
	f.Add([]byte{1, 3, 0, 24}, []byte{2, 8})
	f.Fuzz(func(t *testing.T, a, r []byte) {
		mk := func(b []byte) []netip.Prefix {
			var out []netip.Prefix
			for i := 0; i+1 < len(b); i += 2 {
				out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, b[i], 0, 0}), int(b[i+1]%40)).Masked())
			}
			return out
		}
		old := prefixes("10.1.0.0/16", "10.3.0.0/16", "10.8.0.0/24")
		d := PrefixDelta{Add: mk(a), Remove: mk(r)}
		got, err := applyPrefixes(old, &d)
		if err != nil {
			if !errors.Is(err, ErrBadDelta) {
				t.Fatalf("error %v is not ErrBadDelta", err)
			}
			return
		}
		if !sortedPrefixes(got) {
			t.Fatalf("result %v not sorted and unique", got)
		}
		for _, p := range d.Remove {
			if slices.Contains(got, p) {
				t.Fatalf("removed %s still there", p)
			}
		}
		for _, p := range d.Add {
			if !slices.Contains(got, p) {
				t.Fatalf("added %s missing", p)
			}
		}
		if len(got) != len(old)+len(d.Add)-len(d.Remove) {
			t.Fatalf("%d prefixes, want %d", len(got), len(old)+len(d.Add)-len(d.Remove))
		}
	})
}
