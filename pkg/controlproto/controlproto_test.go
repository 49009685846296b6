package controlproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"net/netip"
	"testing"

	"github.com/cordonhq/cordon/pkg/policy"
)

func TestFrameRoundTrip(t *testing.T) {
	in := &Frame{Type: TypeGatewayMap, GatewayMap: &GatewayMap{
		GatewayID: "gw-1", OverlayAddr: netip.MustParseAddr("100.64.0.1"),
		Rules: []policy.Rule{{ID: "r", App: "ehr", Dst: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}, Proto: policy.ProtoTCP, Ports: []policy.PortRange{{First: 443, Last: 443}}}},
	}}
	var buf bytes.Buffer
	if err := WriteFrame(&buf, in); err != nil {
		t.Fatal(err)
	}
	out, err := ReadFrame(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if out.GatewayMap.GatewayID != "gw-1" || out.GatewayMap.Rules[0].Proto != policy.ProtoTCP || out.GatewayMap.Rules[0].Ports[0].Last != 443 {
		t.Fatalf("round trip lost data: %+v", out.GatewayMap)
	}
}

func TestReadFrameRejects(t *testing.T) {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], MaxFrameSize+1)
	if _, err := ReadFrame(bytes.NewReader(hdr[:])); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized frame: %v", err)
	}
	for name, body := range map[string]string{
		"not json":                 `{`,
		"unknown type":             `{"type":"nope"}`,
		"missing payload":          `{"type":"hello"}`,
		"wrong payload":            `{"type":"hello","client_map":{}}`,
		"two payloads":             `{"type":"hello","hello":{},"client_map":{}}`,
		"bad proto":                `{"type":"gateway_map","gateway_map":{"rules":[{"proto":"smtp"}]}}`,
		"bad key":                  `{"type":"client_map","client_map":{"gateways":[{"public_key":"xx"}]}}`,
		"activity without payload": `{"type":"activity"}`,
		"activity with a map":      `{"type":"activity","activity":{},"gateway_map":{}}`,
		"renew as certificate":     `{"type":"certificate","renew":{"csr":"x"}}`,
		"posture without payload":  `{"type":"posture"}`,
	} {
		if _, err := DecodeFrame([]byte(body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzDecodeFrame(f *testing.F) {
	f.Add([]byte(`{"type":"hello","hello":{"kind":"gateway","capability_version":1}}`))
	f.Add([]byte(`{"type":"flow_events","flow_events":{"events":[{"action":"deny","proto":"tcp","src":"1.2.3.4:5","dst":"[::1]:80"}]}}`))
	f.Add([]byte(`{"type":"gateway_map","gateway_map":{"peers":[{"addr":"100.64.0.2","public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}]}}`))
	f.Add([]byte(`{"type":"activity","activity":{"devices":[{"device_id":"dev-1","idle_ns":1500000000}]}}`))
	f.Add([]byte(`{"type":"posture","posture":{"report":{"os":"debian"}}}`))
	f.Add([]byte(`{"type":"renew","renew":{"csr":"-----BEGIN CERTIFICATE REQUEST-----"}}`))
	f.Add([]byte(`{"type":"client_map","client_map":{"session":{"state":"ended","reason":"idle","step_up":[{"app":"ehr","at":"2026-11-23T00:00:00Z"}]}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		f, err := DecodeFrame(b)
		if err == nil && f.Type == "" {
			t.Fatal("accepted a frame without a type")
		}
	})
}

func TestInstanceID(t *testing.T) {
	a, err := NewInstanceID()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewInstanceID()
	if err != nil {
		t.Fatal(err)
	}
	if !a.Valid() || !b.Valid() || a == b {
		t.Fatalf("two new instance IDs %q and %q: want two different valid ones", a, b)
	}
	for _, bad := range []InstanceID{"", "has space", "new\nline", InstanceID(bytes.Repeat([]byte("a"), maxInstanceLen+1)), "\u00e9t\u00e9"} {
		if bad.Valid() {
			t.Errorf("InstanceID(%q).Valid() = true", bad)
		}
	}
}

// ReadFrame recognises pings without the JSON decoder: the bytes it
// compares with must be what EncodeFrame writes, and a body of the same
// length that is not a ping still decodes (or fails) as JSON.
func TestPingFastPath(t *testing.T) {
	b, err := EncodeFrame(&Frame{Type: TypePing})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b[4:]); got != pingJSON {
		t.Fatalf("a ping encodes as %q, ReadFrame looks for %q", got, pingJSON)
	}
	f, err := ReadFrame(bytes.NewReader(b))
	if err != nil || f.Type != TypePing {
		t.Fatalf("ReadFrame(ping) = %+v, %v", f, err)
	}
	other := []byte(`{"type":"pong"}`) // same length
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(other)))
	if _, err := ReadFrame(bytes.NewReader(append(frame, other...))); err == nil {
		t.Fatal("an unknown frame of a ping's length was accepted")
	}
}

// ReadFrame reads plain acks without the JSON decoder, and gets from them
// what the decoder would.
func TestAckFastPath(t *testing.T) {
	for _, rev := range []uint64{0, 1, 42, math.MaxUint64} {
		b, err := EncodeFrame(&Frame{Type: TypeAck, Ack: &Ack{Revision: rev}})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := plainAck(b[4:]); !ok {
			t.Fatalf("revision %d: %s is not recognised as a plain ack", rev, b[4:])
		}
		f, err := ReadFrame(bytes.NewReader(b))
		if err != nil || f.Type != TypeAck || f.Ack == nil || *f.Ack != (Ack{Revision: rev}) {
			t.Fatalf("ReadFrame(ack %d) = %+v, %v", rev, f, err)
		}
	}
	for _, body := range []string{
		`{"type":"ack","ack":{"revision":}}`,
		`{"type":"ack","ack":{"revision":012}}`,
		`{"type":"ack","ack":{"revision":18446744073709551616}}`,
		`{"type":"ack","ack":{"revision":-1}}`,
		`{"type":"ack","ack":{"revision":1e3}}`,
	} {
		if _, ok := plainAck([]byte(body)); ok {
			t.Errorf("%s taken as a plain ack", body)
		}
	}
}

// FuzzReadFrameAck: whatever the fast path accepts, the decoder decodes
// to the same frame.
func FuzzReadFrameAck(f *testing.F) {
	f.Add([]byte(`{"type":"ack","ack":{"revision":7}}`))
	f.Add([]byte(`{"type":"ack","ack":{"revision":7,"resync":true}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rev, ok := plainAck(b)
		if !ok {
			return
		}
		fr, err := DecodeFrame(b)
		if err != nil || fr.Ack == nil || *fr.Ack != (Ack{Revision: rev}) {
			t.Fatalf("fast path read %s as revision %d; decoder: %+v, %v", b, rev, fr, err)
		}
	})
}
