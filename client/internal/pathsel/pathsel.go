// Package pathsel decides, per gateway, whether the client carries its
// WireGuard packets over UDP or over the TLS stream on TCP 443 (issue 14).
// It is pure decision logic: the caller feeds it what it saw (a UDP probe
// sent, a UDP answer) with the time it saw it, and asks which path to use.
// It holds no goroutine and reads no clock, so tests drive it with
// injected times.
//
// Per gateway:
//
//	udp ──no UDP answer for FallbackAfter while probing (gateway offers TCP)──▶ tcp
//	 ▲                                                                          │
//	 └──────────── ReturnAfterOK consecutive UDP answers ◀──────────────────────┘
//
// UDP is tried first. A gateway that offers no TCP endpoint stays on UDP.
// While on TCP the caller keeps probing UDP (at a slower pace); a single
// answer is not enough to go back, so a path that loses most UDP packets
// does not flap.
package pathsel

import "time"

// Path is the transport a gateway's packets take. The zero value is UDP:
// UDP is always tried first.
type Path uint8

const (
	UDP Path = iota
	TCP
)

func (p Path) String() string {
	if p == TCP {
		return "tcp"
	}
	return "udp"
}

// Decision timers. FallbackAfter leaves a second of the 3 s goal for the
// TLS dial and the WireGuard handshake over it.
const (
	FallbackAfter = 2 * time.Second
	ReturnAfterOK = 2 // consecutive UDP answers before moving back
)

// Selector is one gateway's path decision. Not safe for concurrent use;
// its owner (the client's failover loop) serialises calls.
type Selector struct {
	tcpOffered bool
	path       Path
	firstOut   time.Time // oldest UDP probe not answered; zero: none out
	okRun      int       // consecutive UDP answers
	reported   Path      // the path Tick last returned
}

// New returns a selector on UDP. tcpOffered says whether the map lists a
// TCP endpoint for this gateway.
func New(tcpOffered bool) *Selector { return &Selector{tcpOffered: tcpOffered} }

// SetTCPOffered updates what the map says; a gateway that stops offering
// TCP moves back to UDP at once.
func (s *Selector) SetTCPOffered(ok bool) {
	s.tcpOffered = ok
	if !ok {
		s.path = UDP
	}
}

// Path is the path to use now.
func (s *Selector) Path() Path { return s.path }

// UDPProbeSent records a UDP probe sent at now.
func (s *Selector) UDPProbeSent(now time.Time) {
	if !s.firstOut.IsZero() {
		s.okRun = 0 // the previous probe is still unanswered
		return
	}
	s.firstOut = now
}

// UDPAnswer records an answer over UDP at now.
func (s *Selector) UDPAnswer(now time.Time) {
	s.firstOut = time.Time{}
	s.okRun++
	if s.path == TCP && s.okRun >= ReturnAfterOK {
		s.path = UDP
	}
}

// Tick re-evaluates at now and returns the path to use and whether it
// changed.
func (s *Selector) Tick(now time.Time) (Path, bool) {
	if s.path == UDP && s.tcpOffered && !s.firstOut.IsZero() && now.Sub(s.firstOut) >= FallbackAfter {
		s.path = TCP
		s.firstOut = time.Time{}
		s.okRun = 0
	}
	changed := s.path != s.reported
	s.reported = s.path
	return s.path, changed
}
