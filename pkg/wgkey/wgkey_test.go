package wgkey_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/cordonhq/cordon/pkg/wgkey"
)

func newPrivate(t testing.TB) wgkey.Private {
	t.Helper()
	k, err := wgkey.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestPrivateRoundTrip(t *testing.T) {
	k := newPrivate(t)
	if k.IsZero() {
		t.Fatal("new key is zero")
	}
	s := k.MarshalSecret()
	back, err := wgkey.ParsePrivate(s)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Equal(k) {
		t.Fatal("ParsePrivate(MarshalSecret()) is a different key")
	}
	if back.MarshalSecret() != s {
		t.Errorf("MarshalSecret not stable: %q then %q", s, back.MarshalSecret())
	}
	// The derived public key is WireGuard's (what wg(8) shows).
	want := wgtypes.Key(k.WGTypes()).PublicKey()
	if got := k.Public().WGTypes(); got != want {
		t.Errorf("Public() = %s, want %s", k.Public(), want)
	}
	if k.Public().String() != want.String() {
		t.Errorf("Public().String() = %s, want %s", k.Public(), want)
	}
	// Keys are clamped Curve25519 scalars and differ each time.
	raw := k.WGTypes()
	if raw[0]&7 != 0 || raw[31]&0x80 != 0 || raw[31]&0x40 == 0 {
		t.Errorf("private key not clamped: %x…", raw[0])
	}
	if newPrivate(t).Equal(k) {
		t.Error("two generated keys are equal")
	}
}

func TestPublicRoundTrip(t *testing.T) {
	pub := newPrivate(t).Public()
	if pub.IsZero() {
		t.Fatal("public key is zero")
	}
	back, err := wgkey.ParsePublic(pub.String())
	if err != nil {
		t.Fatal(err)
	}
	if back != pub {
		t.Fatal("ParsePublic(String()) is a different key")
	}
	if wgkey.PublicFromWGTypes(pub.WGTypes()) != pub {
		t.Error("PublicFromWGTypes(WGTypes()) is a different key")
	}
	if b, err := base64.StdEncoding.DecodeString(pub.String()); err != nil || len(b) != 32 {
		t.Errorf("String() = %q is not standard base64 of 32 bytes", pub)
	}
	if !(wgkey.Public{}).IsZero() {
		t.Error("zero Public is not IsZero")
	}
}

func TestPublicJSON(t *testing.T) {
	pub := newPrivate(t).Public()
	type doc struct {
		Key  wgkey.Public  `json:"key"`
		Ptr  *wgkey.Public `json:"ptr,omitempty"`
		Keys map[string]wgkey.Public
	}
	in := doc{Key: pub, Ptr: &pub, Keys: map[string]wgkey.Public{"a": pub}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`{"key":%q,"ptr":%q,"Keys":{"a":%q}}`, pub, pub, pub)
	if string(b) != want {
		t.Fatalf("JSON = %s, want %s", b, want)
	}
	var out doc
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.Key != pub || *out.Ptr != pub || out.Keys["a"] != pub {
		t.Errorf("JSON round trip = %+v, want %s everywhere", out, pub)
	}
	for _, bad := range []string{`{"key":"xx"}`, `{"key":""}`, `{"key":42}`, `{"key":"` + strings.Repeat("A", 40) + `"}`} {
		var d doc
		if err := json.Unmarshal([]byte(bad), &d); err == nil {
			t.Errorf("json.Unmarshal(%s) accepted a bad key: %v", bad, d.Key)
		}
	}
}

func TestParseRejects(t *testing.T) {
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, n)) }
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"short", b64(31)},
		{"long", b64(33)},
		{"not base64", strings.Repeat("!", 44)},
		{"hex", strings.Repeat("ab", 32)},
		{"url alphabet", strings.ReplaceAll(strings.ReplaceAll(b64(32)[:43]+"_", "+", "-"), "/", "_")},
		{"spaces inside", b64(32)[:20] + " " + b64(32)[20:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if k, err := wgkey.ParsePrivate(tt.in); err == nil {
				t.Errorf("ParsePrivate accepted %q", tt.in)
			} else {
				if !k.IsZero() {
					t.Error("ParsePrivate returned a key with its error")
				}
				// The input may be a (damaged) secret: the error must not echo it.
				if tt.in != "" && strings.Contains(err.Error(), tt.in) {
					t.Errorf("ParsePrivate error echoes its input: %v", err)
				}
			}
			if k, err := wgkey.ParsePublic(tt.in); err == nil || !k.IsZero() {
				t.Errorf("ParsePublic(%q) = %v, %v; want zero and an error", tt.in, k, err)
			}
			var p wgkey.Public
			if err := p.UnmarshalText([]byte(tt.in)); err == nil {
				t.Errorf("UnmarshalText accepted %q", tt.in)
			}
		})
	}
}

func TestPrivateEqual(t *testing.T) {
	k := newPrivate(t)
	same, err := wgkey.ParsePrivate(k.MarshalSecret())
	if err != nil {
		t.Fatal(err)
	}
	raw := k.WGTypes()
	flip := func(i int) wgkey.Private {
		r := raw
		r[i] ^= 1
		p, err := wgkey.ParsePrivate(base64.StdEncoding.EncodeToString(r[:]))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		a, b wgkey.Private
		want bool
	}{
		{"same key", k, same, true},
		{"itself", k, k, true},
		{"first byte differs", k, flip(0), false},
		{"middle byte differs", k, flip(16), false},
		{"last byte differs", k, flip(31), false},
		{"zero", k, wgkey.Private{}, false},
		{"zero and zero", wgkey.Private{}, wgkey.Private{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.Equal(tt.b); got != tt.want {
				t.Errorf("a.Equal(b) = %v, want %v", got, tt.want)
			}
			if got := tt.b.Equal(tt.a); got != tt.want {
				t.Errorf("b.Equal(a) = %v, want %v", got, tt.want)
			}
		})
	}
	// == would not be constant time: the type must not allow it.
	if reflect.TypeFor[wgkey.Private]().Comparable() {
		t.Error("wgkey.Private is comparable with ==")
	}
	if !(wgkey.Private{}).IsZero() || k.IsZero() {
		t.Error("IsZero wrong")
	}
}

// A private key never prints, whatever the verb or the logger: the output
// must not depend on the key at all.
func TestPrivateNeverPrints(t *testing.T) {
	k1, k2 := newPrivate(t), newPrivate(t)
	if got := k1.String(); got != "privkey:[redacted]" {
		t.Errorf("String() = %q", got)
	}
	type rendering = struct {
		name string
		f    func(k wgkey.Private) string
	}
	render := []rendering{
		{"%v %+v", func(k wgkey.Private) string { return fmt.Sprintf("%v %+v", k, k) }},
		{"fmt.Sprint", func(k wgkey.Private) string { return fmt.Sprint(k, &k) }},
		{"JSON", func(k wgkey.Private) string { b, _ := json.Marshal(k); return string(b) }},
		{"slog", func(k wgkey.Private) string {
			var buf bytes.Buffer
			noTime := &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			}}
			slog.New(slog.NewTextHandler(&buf, noTime)).Info("x", "key", k)
			slog.New(slog.NewJSONHandler(&buf, noTime)).Info("x", "key", k)
			return buf.String()
		}},
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%o", "%b", "%10.3v"} {
		render = append(render,
			rendering{verb, func(k wgkey.Private) string { return fmt.Sprintf(verb, k) }},
			rendering{verb + " of a pointer", func(k wgkey.Private) string { return fmt.Sprintf(verb, &k) }},
			rendering{verb + " in a struct", func(k wgkey.Private) string { return fmt.Sprintf(verb, struct{ K wgkey.Private }{k}) }},
			rendering{verb + " in a slice", func(k wgkey.Private) string { return fmt.Sprintf(verb, []wgkey.Private{k}) }},
		)
	}
	for _, r := range render {
		a, b := r.f(k1), r.f(k2)
		if a != b || strings.Contains(a, k1.MarshalSecret()) {
			t.Errorf("%s reveals the key: %q for one key, %q for another", r.name, a, b)
		}
	}
}

// Public keys arrive in untrusted JSON (logins, enrollments, frames).
func FuzzParsePublic(f *testing.F) {
	k, err := wgkey.NewPrivate()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(k.Public().String())
	f.Add("")
	f.Add(strings.Repeat("A", 43) + "=")
	f.Add(strings.Repeat("/", 44))
	f.Fuzz(func(t *testing.T, s string) {
		p, err := wgkey.ParsePublic(s)
		if err != nil {
			return
		}
		again, err := wgkey.ParsePublic(p.String())
		if err != nil || again != p {
			t.Fatalf("ParsePublic(%q) = %s does not round trip: %v", s, p, err)
		}
	})
}
