package api

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode"

	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// FuzzDecodeBodies feeds arbitrary bytes through the JSON entry points and
// the validation behind them: they must never panic, must only fail with a
// client error, and whatever they accept must satisfy the invariants the
// store relies on.
func FuzzDecodeBodies(f *testing.F) {
	for _, s := range []string{
		`{"name":"clinical","cidrs":["10.20.0.0/24","fd00::/64"]}`,
		`{"name":"ehr","segment":"clinical","dns_name":"ehr.hospital.internal","address":"10.20.0.5","proto":"tcp","ports":["443","8000-8099"]}`,
		`{"name":"x","segment":"s","dns_name":"A.B.","address":"10.0.0.0/8","proto":"icmp","classification":"public"}`,
		`{"username":"nurse","password":"p","totp":"123456","public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","csr":"x"}`,
		`{"username":"er-1","password":"p","recovery_code":"abcd-efgh-jkmn-pqrs","break_glass":true,"justification":"ED downtime\u001b[2J","csr":"x"}`,
		`{"comment":"checked with the ED lead"}`,
		`{"token":"cordon-enroll-x","name":"gw","endpoint":"[::1]:51820"}`,
		`{"segment":"s","ttl":"2d"}`,
		`{"name":1}`, `[]`, `null`, `{"cidrs":[null]}`, "{\"name\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(err error) {
			if err == nil {
				return
			}
			var ae *apiError
			if !errors.As(err, &ae) || ae.status < 400 || ae.status > 499 || ae.msg == "" {
				t.Fatalf("error %v is not a client error", err)
			}
		}

		var seg adminapi.CreateSegmentRequest
		if err := decodeBody(bytes.NewReader(b), &seg); err == nil {
			s, err := parseSegment(&seg)
			check(err)
			if err == nil {
				if !nameRE.MatchString(s.Name) || len(s.CIDRs) == 0 {
					t.Fatalf("accepted segment %+v", s)
				}
				for _, p := range s.CIDRs {
					if p != p.Masked() || p.Overlaps(store.OverlayPrefix) {
						t.Fatalf("accepted prefix %s", p)
					}
				}
			}
		} else {
			check(err)
		}

		var app adminapi.CreateAppRequest
		if err := decodeBody(bytes.NewReader(b), &app); err == nil {
			x, err := parseApp(&app)
			check(err)
			if err == nil {
				if !x.Addr.IsValid() || x.Addr != x.Addr.Masked() || x.DNSName == "" || x.Classification == "" {
					t.Fatalf("accepted app %+v", x)
				}
				if _, err := normalizeDNSName(x.DNSName); err != nil {
					t.Fatalf("normalized name %q does not re-validate: %v", x.DNSName, err)
				}
				check(appInSegment(x, store.Segment{Name: "s", CIDRs: nil}))
			}
		} else {
			check(err)
		}

		var tok adminapi.CreateGatewayTokenRequest
		if err := decodeBody(bytes.NewReader(b), &tok); err == nil {
			_, err := parseTTL(tok.TTL)
			check(err)
		} else {
			check(err)
		}

		var login controlproto.LoginRequest
		if err := decodeBody(bytes.NewReader(b), &login); err == nil {
			check(checkHostname(login.Hostname))
			check(checkCSR(login.CSR))
			if err := checkBreakGlassLogin(&login); err == nil && login.BreakGlass {
				j := login.Justification
				if j == "" || len(j) > controlproto.MaxJustification || strings.ContainsFunc(j, unicode.IsControl) || login.RecoveryCode == "" {
					t.Fatalf("accepted break-glass sign-in %+v", login)
				}
			} else {
				check(err)
			}
		} else {
			check(err)
		}

		var enroll controlproto.EnrollGatewayRequest
		if err := decodeBody(bytes.NewReader(b), &enroll); err == nil {
			check(checkEndpoint(enroll.Endpoint))
		} else {
			check(err)
		}
	})
}
