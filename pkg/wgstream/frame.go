// Package wgstream carries WireGuard packets over a byte stream (TLS on TCP
// 443 where UDP to a gateway is blocked). Each packet is one frame: a 2-byte
// big-endian length, then that many bytes of WireGuard message. The stream
// carries ciphertext only: a frame whose payload is not a WireGuard message
// (type 1-4 with zero reserved bytes, at least the minimum size) is rejected,
// so neither a relay nor the TLS endpoint ever handles plaintext, and the
// gateway's authorizer sees the same packets as on the UDP path.
//
// Contract for readers: any framing error (empty frame, frame over the
// limit, non-WireGuard payload, truncated frame) is final. The caller counts
// the drop and closes the stream; the reader never resynchronises inside a
// stream, because after a bad length the next byte boundary is unknown.
package wgstream

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxFrame is the largest payload a frame may carry: the largest length
// the 2-byte prefix can state. Readers may be given a smaller limit.
const MaxFrame = 1<<16 - 1

// minMessage is the smallest WireGuard message: a transport data header
// (16 bytes) and its authentication tag (16 bytes), that is a keepalive.
const minMessage = 32

// WireGuard message types (the first byte; three reserved zero bytes follow).
const (
	msgInitiation  = 1
	msgResponse    = 2
	msgCookieReply = 3
	msgTransport   = 4
)

// The handshake messages have fixed sizes (WireGuard whitepaper, 5.4).
var fixedSize = [...]int{msgInitiation: 148, msgResponse: 92, msgCookieReply: 64}

// headerLen is how much of a message shapeOK needs: its type and reserved
// bytes.
const headerLen = 4

// Errors callers branch on (to count drops by reason). All are final for
// the stream.
var (
	ErrEmptyFrame    = errors.New("wgstream: empty frame")
	ErrFrameTooLarge = errors.New("wgstream: frame over the size limit")
	ErrNotWireGuard  = errors.New("wgstream: frame is not a WireGuard message")
)

// IsWireGuardMessage reports whether b has the shape of a WireGuard message:
// a known type, zero reserved bytes, the exact size of a handshake message
// of its type, or at least the size of a keepalive for transport data. It
// checks shape only; the device authenticates the content.
func IsWireGuardMessage(b []byte) bool {
	return len(b) >= headerLen && shapeOK(b[:headerLen], len(b))
}

// shapeOK checks a message's first headerLen bytes against its size n.
func shapeOK(hdr []byte, n int) bool {
	if n < minMessage || hdr[0] < msgInitiation || hdr[0] > msgTransport {
		return false
	}
	if hdr[0] != msgTransport && n != fixedSize[hdr[0]] {
		return false
	}
	return hdr[1] == 0 && hdr[2] == 0 && hdr[3] == 0
}

// AppendFrame appends pkt as one frame to dst and returns the result. It
// refuses (with an error, writing nothing) a packet that is empty, too large
// or not a WireGuard message, so a sender can never put plaintext on the
// stream by mistake.
func AppendFrame(dst, pkt []byte) ([]byte, error) {
	if err := check(len(pkt), MaxFrame); err != nil {
		return dst, err
	}
	if !IsWireGuardMessage(pkt) {
		return dst, ErrNotWireGuard
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(pkt)))
	return append(dst, pkt...), nil
}

func check(n, limit int) error {
	if n == 0 {
		return ErrEmptyFrame
	}
	if n > limit {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, limit)
	}
	return nil
}

// Reader reads frames from a stream. It is not safe for concurrent use; a
// stream has one reading goroutine.
type Reader struct {
	r     io.Reader
	limit int
	hdr   [2]byte
}

// NewReader returns a Reader of r that accepts frames of up to limit bytes
// (limit <= 0 or over MaxFrame means MaxFrame).
func NewReader(r io.Reader, limit int) *Reader {
	if limit <= 0 || limit > MaxFrame {
		limit = MaxFrame
	}
	return &Reader{r: r, limit: limit}
}

// ReadFrame reads the next frame into buf and returns its length. buf must
// hold the reader's limit. io.EOF means the stream ended cleanly between
// frames; any other error is final (see the package contract).
func (r *Reader) ReadFrame(buf []byte) (int, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, fmt.Errorf("wgstream: read frame header: %w", err)
		}
		return 0, err // io.EOF: clean end between frames
	}
	n := int(binary.BigEndian.Uint16(r.hdr[:]))
	if err := check(n, r.limit); err != nil {
		return 0, err
	}
	if len(buf) < n {
		return 0, fmt.Errorf("wgstream: read buffer of %d bytes holds no %d-byte frame", len(buf), n)
	}
	if n < minMessage {
		return 0, ErrNotWireGuard
	}
	// The message's header first: a stream that is not WireGuard is
	// refused after 6 bytes, not after the length it claims.
	if err := r.readFull(buf[:headerLen], n); err != nil {
		return 0, err
	}
	if !shapeOK(buf[:headerLen], n) {
		return 0, ErrNotWireGuard
	}
	if err := r.readFull(buf[headerLen:n], n); err != nil {
		return 0, err
	}
	return n, nil
}

func (r *Reader) readFull(b []byte, n int) error {
	if _, err := io.ReadFull(r.r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("wgstream: read %d-byte frame: %w", n, err)
	}
	return nil
}
