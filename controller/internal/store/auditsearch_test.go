package store

import (
	"errors"
	"testing"
	"time"
)

func TestCursorRoundTrip(t *testing.T) {
	q := AuditQuery{User: "nurse", Type: "flow.", Since: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)}
	c := SearchCursor{Time: time.Date(2026, 3, 1, 8, 30, 0, 123456000, time.UTC), Seq: 4711}
	q.Cursor = q.EncodeCursor(c)
	got, ok, err := q.DecodeCursor()
	if err != nil || !ok || !got.Time.Equal(c.Time) || got.Seq != c.Seq {
		t.Fatalf("round trip: %+v %v %v, want %+v", got, ok, err, c)
	}
	for _, other := range []AuditQuery{{User: "nurse", Type: "flow"}, {User: "nurs", Type: "eflow."}, {User: "nurse", Type: "flow.", Outcome: "deny"}, {User: "nurse", Type: "flow."}} {
		other.Cursor = q.Cursor
		if _, _, err := other.DecodeCursor(); !errors.Is(err, ErrBadCursor) {
			t.Errorf("cursor of %+v accepted for %+v", q, other)
		}
	}
	if _, ok, err := (AuditQuery{}).DecodeCursor(); ok || err != nil {
		t.Errorf("no cursor: %v %v", ok, err)
	}
}

// FuzzDecodeCursor: a cursor comes from the API's query string; any bytes
// decode to an error or to a cursor that encodes back to the same text.
func FuzzDecodeCursor(f *testing.F) {
	q := AuditQuery{App: "ehr"}
	f.Add(q.EncodeCursor(SearchCursor{Time: time.Unix(1700000000, 0), Seq: 1}))
	f.Add("")
	f.Add("AAAA")
	f.Add("AQ")
	f.Fuzz(func(t *testing.T, s string) {
		q := q
		q.Cursor = s
		c, ok, err := q.DecodeCursor()
		if err != nil {
			if !errors.Is(err, ErrBadCursor) {
				t.Fatalf("%q: %v", s, err)
			}
			return
		}
		if !ok {
			if s != "" {
				t.Fatalf("%q: no cursor and no error", s)
			}
			return
		}
		if c.Seq < 1 {
			t.Fatalf("%q: seq %d", s, c.Seq)
		}
		if back := q.EncodeCursor(c); back != s {
			t.Fatalf("%q decodes to %+v, which encodes to %q", s, c, back)
		}
	})
}
