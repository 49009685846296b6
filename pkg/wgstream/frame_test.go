package wgstream

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// wgMsg returns a WireGuard-shaped message of type typ and size n.
func wgMsg(typ byte, n int) []byte {
	b := make([]byte, n)
	b[0] = typ
	for i := 4; i < n; i++ {
		b[i] = byte(i)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	pkts := [][]byte{wgMsg(1, 148), wgMsg(2, 92), wgMsg(3, 64), wgMsg(4, 32), wgMsg(4, 1452), wgMsg(4, MaxFrame)}
	var stream []byte
	for _, p := range pkts {
		var err error
		if stream, err = AppendFrame(stream, p); err != nil {
			t.Fatalf("AppendFrame(%d bytes): %v", len(p), err)
		}
	}
	r := NewReader(bytes.NewReader(stream), 0)
	buf := make([]byte, MaxFrame)
	for i, want := range pkts {
		n, err := r.ReadFrame(buf)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("frame %d: got %d bytes, want %d, content differs", i, n, len(want))
		}
	}
	if _, err := r.ReadFrame(buf); err != io.EOF {
		t.Fatalf("after the last frame: got %v, want io.EOF", err)
	}
}

func TestAppendFrameRefusesNonWireGuard(t *testing.T) {
	plain := []byte("GET / HTTP/1.1\r\nHost: ehr.example\r\n\r\n")
	for name, tc := range map[string]struct {
		pkt  []byte
		want error
	}{
		"empty":           {nil, ErrEmptyFrame},
		"plaintext":       {plain, ErrNotWireGuard},
		"type 0":          {wgMsg(0, 64), ErrNotWireGuard},
		"type 5":          {wgMsg(5, 64), ErrNotWireGuard},
		"short keepalive": {wgMsg(4, 31), ErrNotWireGuard},
		"reserved set":    {func() []byte { b := wgMsg(4, 64); b[2] = 1; return b }(), ErrNotWireGuard},
		"response of 148": {wgMsg(2, 148), ErrNotWireGuard},
		"too large":       {wgMsg(4, MaxFrame+1), ErrFrameTooLarge},
	} {
		t.Run(name, func(t *testing.T) {
			out, err := AppendFrame([]byte{9}, tc.pkt)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if !bytes.Equal(out, []byte{9}) {
				t.Fatalf("refused frame wrote %d bytes", len(out)-1)
			}
		})
	}
}

func TestReadFrameErrors(t *testing.T) {
	good, _ := AppendFrame(nil, wgMsg(4, 64))
	for name, tc := range map[string]struct {
		stream []byte
		limit  int
		want   error
	}{
		"empty frame":     {[]byte{0, 0}, 0, ErrEmptyFrame},
		"over limit":      {good, 63, ErrFrameTooLarge},
		"plaintext":       {append([]byte{0, 40}, bytes.Repeat([]byte{'A'}, 40)...), 0, ErrNotWireGuard},
		"half header":     {[]byte{0}, 0, io.ErrUnexpectedEOF},
		"truncated frame": {good[:40], 0, io.ErrUnexpectedEOF},
		// Refused on its first bytes, before the length it claims.
		"plaintext, long":        {[]byte("GET / HTTP/1.1\r\n"), 0, ErrNotWireGuard},
		"initiation of 64 bytes": {append([]byte{0, 64}, wgMsg(1, 64)...), 0, ErrNotWireGuard},
		"short frame":            {append([]byte{0, 31}, wgMsg(4, 31)...), 0, ErrNotWireGuard},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewReader(bytes.NewReader(tc.stream), tc.limit).ReadFrame(make([]byte, MaxFrame))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzReadFrame feeds arbitrary streams to the reader: it must never panic,
// never return a frame over its limit, and every frame it returns must be a
// WireGuard message that re-encodes to the bytes it was read from.
func FuzzReadFrame(f *testing.F) {
	good, _ := AppendFrame(nil, wgMsg(1, 148))
	good, _ = AppendFrame(good, wgMsg(4, 32))
	f.Add(good, 200)
	f.Add([]byte{0xff, 0xff, 4, 0, 0, 0}, 0)
	f.Add([]byte{0, 0}, 10)
	f.Fuzz(func(t *testing.T, stream []byte, limit int) {
		r := NewReader(bytes.NewReader(stream), limit)
		buf := make([]byte, MaxFrame)
		off := 0
		for {
			n, err := r.ReadFrame(buf)
			if err != nil {
				return
			}
			if n > r.limit || !IsWireGuardMessage(buf[:n]) {
				t.Fatalf("accepted bad frame of %d bytes (limit %d)", n, r.limit)
			}
			re, err := AppendFrame(nil, buf[:n])
			if err != nil {
				t.Fatalf("accepted frame does not re-encode: %v", err)
			}
			if !bytes.Equal(re, stream[off:off+len(re)]) {
				t.Fatalf("frame at %d re-encodes differently", off)
			}
			off += len(re)
		}
	})
}
