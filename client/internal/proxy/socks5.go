package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/cordonhq/cordon/client/internal/reach"
)

// RFC 1928 constants.
const (
	socksVersion = 5

	methodNoAuth       = 0x00
	methodNoAcceptable = 0xff

	cmdConnect = 0x01

	atypIPv4   = 0x01
	atypDomain = 0x03
	atypIPv6   = 0x04

	repSucceeded           = 0x00
	repGeneralFailure      = 0x01
	repNotAllowed          = 0x02
	repNetUnreachable      = 0x03
	repHostUnreachable     = 0x04
	repConnectionRefused   = 0x05
	repTTLExpired          = 0x06
	repCommandUnsupported  = 0x07
	repAddrTypeUnsupported = 0x08
)

// socksRequest is a parsed SOCKS5 request. host is an IP literal or a name.
type socksRequest struct {
	cmd  byte
	host string
	port uint16
}

// socksError is a request the server answers with reply code rep.
type socksError struct {
	rep byte
	msg string
}

func (e *socksError) Error() string { return "socks5: " + e.msg }

var errBadGreeting = errors.New("socks5: not a SOCKS5 greeting")

// readGreeting reads the client's version/method selection message and
// reports whether it offers "no authentication required". Every length in
// the message is one byte, so nothing read here exceeds 257 bytes.
func readGreeting(r io.Reader) (noAuth bool, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return false, err
	}
	if hdr[0] != socksVersion || hdr[1] == 0 {
		return false, errBadGreeting
	}
	var methods [255]byte
	m := methods[:hdr[1]]
	if _, err := io.ReadFull(r, m); err != nil {
		return false, err
	}
	for _, b := range m {
		if b == methodNoAuth {
			return true, nil
		}
	}
	return false, nil
}

// readRequest reads one SOCKS5 request (at most 4+1+255+2 bytes). An error
// of type *socksError says which reply to send; other errors mean the
// connection is unusable.
func readRequest(r io.Reader) (socksRequest, error) {
	var hdr [4]byte // VER CMD RSV ATYP
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return socksRequest{}, err
	}
	if hdr[0] != socksVersion {
		return socksRequest{}, &socksError{rep: repGeneralFailure, msg: fmt.Sprintf("request version %d", hdr[0])}
	}
	req := socksRequest{cmd: hdr[1]}
	switch hdr[3] {
	case atypIPv4:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return socksRequest{}, err
		}
		req.host = netip.AddrFrom4(b).String()
	case atypIPv6:
		var b [16]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return socksRequest{}, err
		}
		req.host = netip.AddrFrom16(b).Unmap().String()
	case atypDomain:
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return socksRequest{}, err
		}
		var b [255]byte
		name := b[:n[0]]
		if _, err := io.ReadFull(r, name); err != nil {
			return socksRequest{}, err
		}
		if len(name) == 0 {
			return socksRequest{}, &socksError{rep: repHostUnreachable, msg: "empty domain name"}
		}
		req.host = string(name)
	default:
		return socksRequest{}, &socksError{rep: repAddrTypeUnsupported, msg: fmt.Sprintf("address type %d", hdr[3])}
	}
	var port [2]byte
	if _, err := io.ReadFull(r, port[:]); err != nil {
		return socksRequest{}, err
	}
	req.port = binary.BigEndian.Uint16(port[:])
	if req.cmd != cmdConnect {
		// BIND and UDP ASSOCIATE would need listeners on the tunnel side.
		return socksRequest{}, &socksError{rep: repCommandUnsupported, msg: fmt.Sprintf("command %d", req.cmd)}
	}
	return req, nil
}

// socksReply encodes a reply with bound address bnd (zero address if nil).
func socksReply(rep byte, bnd net.Addr) []byte {
	ap := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	if ta, ok := bnd.(*net.TCPAddr); ok {
		ap = ta.AddrPort()
	}
	a := ap.Addr().Unmap()
	b := []byte{socksVersion, rep, 0}
	if a.Is4() {
		b = append(b, atypIPv4)
	} else {
		b = append(b, atypIPv6)
	}
	b = append(b, a.AsSlice()...)
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

func socksRep(f failure) byte {
	switch f {
	case failHostUnreachable, failTimeout:
		return repHostUnreachable
	case failNotAllowed:
		return repNotAllowed
	case failRefused:
		return repConnectionRefused
	case failNetUnreachable:
		return repNetUnreachable
	default:
		return repGeneralFailure
	}
}

// reasonRep is the reply for a connect refused for reason r (the
// client's own verdict, as the HTTP proxy's status) after dial failure f.
// SOCKS5 has no "sign in" reply, so a missing or ended session is "not
// allowed by ruleset", as a name the user is not entitled to (which must
// look the same as one that does not exist).
func reasonRep(r reach.Reason, f failure) byte {
	switch r {
	case reach.ReasonNotEntitled, reach.ReasonSignedOut, reach.ReasonSessionEnded:
		return repNotAllowed
	case reach.ReasonGatewayUnreachable:
		return repNetUnreachable // the path to the app's network is down
	case reach.ReasonNoAnswer:
		switch f {
		case failRefused:
			return repConnectionRefused
		case failTimeout:
			return repTTLExpired // what SOCKS5 servers answer a connect timeout with
		}
		return repHostUnreachable
	default: // controller down, unknown
		return repGeneralFailure
	}
}

func (s *Server) serveSOCKS5(ctx context.Context, c net.Conn) {
	log := s.log.With(logClient, c.RemoteAddr().String())
	c.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	noAuth, err := readGreeting(c)
	if err != nil {
		log.Debug("socks5: greeting", logErr, err)
		return
	}
	if !noAuth {
		c.Write([]byte{socksVersion, methodNoAcceptable})
		log.Debug("socks5: client offers no acceptable method (only no-auth is supported)")
		return
	}
	if _, err := c.Write([]byte{socksVersion, methodNoAuth}); err != nil {
		return
	}
	req, err := readRequest(c)
	if err != nil {
		var se *socksError
		if errors.As(err, &se) {
			c.Write(socksReply(se.rep, nil))
		}
		log.Debug("socks5: request", logErr, err)
		return
	}

	// The dial has its own timeout; only the reply write is bounded here.
	c.SetDeadline(time.Time{})
	target := net.JoinHostPort(req.host, fmt.Sprint(req.port))
	up, err := s.dial(ctx, req.host, req.port)
	c.SetWriteDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	if err != nil {
		f := classify(err)
		if v, ok := s.explain(req.host, err); ok {
			log.Info("socks5: connect refused", logApp, logName(req.host), logReason, v.Reason.String(), logErr, err)
			c.Write(socksReply(reasonRep(v.Reason, f), nil))
			return
		}
		c.Write(socksReply(socksRep(f), nil))
		log.Debug("socks5: connect refused", logTarget, sanitize(target), logErr, err)
		return
	}
	defer up.Close()
	if _, err := c.Write(socksReply(repSucceeded, up.LocalAddr())); err != nil {
		return
	}
	c.SetWriteDeadline(time.Time{})
	log.Debug("socks5: connected", logTarget, target)
	splice(c, up)
}
