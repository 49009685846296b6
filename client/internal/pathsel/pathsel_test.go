package pathsel

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func TestStartsOnUDP(t *testing.T) {
	s := New(true)
	if p, changed := s.Tick(t0); p != UDP || changed {
		t.Fatalf("fresh selector: got %v changed=%v, want udp unchanged", p, changed)
	}
}

func TestFallsBackWithinBound(t *testing.T) {
	s := New(true)
	// Probes every 250 ms, none answered.
	var fellAt time.Duration = -1
	for d := time.Duration(0); d <= 5*time.Second; d += 250 * time.Millisecond {
		s.UDPProbeSent(at(d))
		if p, changed := s.Tick(at(d)); changed {
			if p != TCP {
				t.Fatalf("changed to %v, want tcp", p)
			}
			fellAt = d
			break
		}
	}
	if fellAt < FallbackAfter || fellAt > FallbackAfter+250*time.Millisecond {
		t.Fatalf("fell back at %v, want between %v and one probe interval later", fellAt, FallbackAfter)
	}
}

func TestNoFallbackWhileUDPAnswers(t *testing.T) {
	s := New(true)
	for d := time.Duration(0); d <= 10*time.Second; d += 250 * time.Millisecond {
		s.UDPProbeSent(at(d))
		s.UDPAnswer(at(d + 20*time.Millisecond))
		if p, _ := s.Tick(at(d + 20*time.Millisecond)); p != UDP {
			t.Fatalf("at %v: on %v with UDP answering", d, p)
		}
	}
}

func TestNoFallbackWithoutTCPEndpoint(t *testing.T) {
	s := New(false)
	s.UDPProbeSent(t0)
	if p, _ := s.Tick(at(time.Minute)); p != UDP {
		t.Fatalf("gateway without tcp endpoint: on %v", p)
	}
}

func TestReturnsToUDPAfterConsecutiveAnswers(t *testing.T) {
	s := New(true)
	s.UDPProbeSent(t0)
	if p, changed := s.Tick(at(FallbackAfter)); p != TCP || !changed {
		t.Fatalf("got %v changed=%v, want tcp changed", p, changed)
	}
	// One answer, then a lost probe: not enough.
	s.UDPProbeSent(at(3 * time.Second))
	s.UDPAnswer(at(3*time.Second + time.Millisecond))
	s.UDPProbeSent(at(4 * time.Second))
	s.UDPProbeSent(at(5 * time.Second)) // the 4 s probe was lost
	if p, _ := s.Tick(at(5 * time.Second)); p != TCP {
		t.Fatalf("after one answer and a loss: on %v, want tcp", p)
	}
	s.UDPAnswer(at(5*time.Second + time.Millisecond))
	if p, _ := s.Tick(at(5*time.Second + time.Millisecond)); p != TCP {
		t.Fatalf("after one answer: on %v, want tcp", p)
	}
	s.UDPProbeSent(at(6 * time.Second))
	s.UDPAnswer(at(6*time.Second + time.Millisecond))
	if p, changed := s.Tick(at(6*time.Second + time.Millisecond)); p != UDP || !changed {
		t.Fatalf("after %d answers in a row: got %v changed=%v, want udp changed", ReturnAfterOK, p, changed)
	}
}

func TestWithdrawnTCPEndpointMovesBack(t *testing.T) {
	s := New(true)
	s.UDPProbeSent(t0)
	s.Tick(at(FallbackAfter))
	s.SetTCPOffered(false)
	if p, changed := s.Tick(at(FallbackAfter + time.Second)); p != UDP || !changed {
		t.Fatalf("got %v changed=%v, want udp changed", p, changed)
	}
}
