package certrenew_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/pkg/agentstate"
	"github.com/cordonhq/cordon/pkg/certrenew"
	"github.com/cordonhq/cordon/pkg/controlclient"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

var _ controlclient.Renewer = (*certrenew.Renewer)(nil)

// testCA stands in for the controller's CA (pkg/ may not import
// controller/): it issues agent certificates as ca.IssueAgentCert does.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

var serial int64 = 100

func (c *testCA) issue(t *testing.T, pub crypto.PublicKey, id, kind string, from, to time.Time) []byte {
	t.Helper()
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: id, OrganizationalUnit: []string{kind}},
		NotBefore:    from, NotAfter: to,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// setup enrolls an agent "dev-1" whose certificate is valid from start for
// life, and returns its state and a renewer on a fake clock at start.
func setup(t *testing.T, ca *testCA, start time.Time, life time.Duration) (*agentstate.State, *certrenew.Renewer, *fakeClock) {
	t.Helper()
	st, err := agentstate.Keys(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	cert := ca.issue(t, st.TLSKey.Public(), "dev-1", "client", start, start.Add(life))
	if err := st.SaveEnrollment(agentstate.Enrollment{ID: "dev-1"}, cert, ca.pem); err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: start}
	r, err := certrenew.New(certrenew.Config{State: st, Now: clk.Now, Remedy: "sign in again with 'cordon login'"})
	if err != nil {
		t.Fatal(err)
	}
	return st, r, clk
}

// Before two thirds of the lifetime nothing is asked (and the wait is
// capped at the hourly check); after it one request goes out, carrying a
// CSR for the agent's own key; no second one while it is outstanding,
// unless the connection was re-established.
func TestRenewsAtTwoThirds(t *testing.T) {
	ca := newCA(t)
	start := time.Now().Add(-time.Minute).Truncate(time.Second)
	life := 30 * 24 * time.Hour
	st, r, clk := setup(t, ca, start, life)
	due := start.Add(20 * 24 * time.Hour)

	clk.Set(due.Add(-2 * time.Hour))
	if f, wait := r.Renewal(true); f != nil || wait != time.Hour {
		t.Fatalf("2h before due: frame %v, wait %v; want none, 1h (the hourly check)", f, wait)
	}
	clk.Set(due.Add(-10 * time.Minute))
	if f, wait := r.Renewal(false); f != nil || wait != 10*time.Minute {
		t.Fatalf("10m before due: frame %v, wait %v; want none, 10m", f, wait)
	}
	clk.Set(due.Add(time.Second))
	f, wait := r.Renewal(false)
	if f == nil || f.Type != controlproto.TypeRenew || f.Renew == nil {
		t.Fatalf("after due: frame %v, want a Renew frame", f)
	}
	if wait != certrenew.DefaultRetryAfter {
		t.Errorf("wait after a request = %v, want %v", wait, certrenew.DefaultRetryAfter)
	}
	b, _ := pem.Decode([]byte(f.Renew.CSR))
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil || csr.CheckSignature() != nil || !st.TLSKey.PublicKey.Equal(csr.PublicKey) {
		t.Fatalf("CSR %v: not a valid request for the agent's key", err)
	}
	if f, _ := r.Renewal(false); f != nil {
		t.Error("second request while the first is outstanding")
	}
	if f, _ := r.Renewal(true); f == nil {
		t.Error("no request after a reconnect: the earlier one can never be answered")
	}
}

// An accepted answer is saved atomically with mode 0600, becomes the
// current certificate, moves the next renewal out, and the next TLS
// handshake of a config made before the renewal presents it.
func TestRenewedSavesAndNextHandshakeUsesIt(t *testing.T) {
	ca := newCA(t)
	start := time.Now().Add(-20 * time.Minute)
	st, r, clk := setup(t, ca, start, 30*time.Minute)
	clk.Set(time.Now())
	tc, err := st.ClientTLS("test/1")
	if err != nil {
		t.Fatal(err)
	}
	if got := handshakeSerial(t, ca, tc); got.Cmp(mustCert(t, st).SerialNumber) != 0 {
		t.Fatalf("handshake presented serial %v before renewal", got)
	}
	if f, _ := r.Renewal(true); f == nil {
		t.Fatal("not due at 2/3")
	}
	renewed := ca.issue(t, st.TLSKey.Public(), "dev-1", "client", time.Now(), time.Now().Add(30*time.Minute))
	if err := r.Renewed(&controlproto.Certificate{Certificate: string(renewed)}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(st.Dir, "cert.pem")
	onDisk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(onDisk) != string(renewed) {
		t.Error("cert.pem does not hold the renewed certificate")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("cert.pem mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left behind: %v", err)
	}
	if r.Renewals() != 1 {
		t.Errorf("Renewals = %d, want 1", r.Renewals())
	}
	if f, _ := r.Renewal(false); f != nil {
		t.Error("still due right after renewal")
	}
	cur := mustCert(t, st)
	if got := handshakeSerial(t, ca, tc); got.Cmp(cur.SerialNumber) != 0 {
		t.Errorf("next handshake presented serial %v, want the renewed %v", got, cur.SerialNumber)
	}
	// A restarted agent loads the renewed certificate.
	again, err := agentstate.Load(st.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if mustCert(t, again).SerialNumber.Cmp(cur.SerialNumber) != 0 {
		t.Error("Load after renewal returns the old certificate")
	}
}

// The agent keeps its certificate when the answer is a refusal or a
// certificate it must not accept, and waits before asking again.
func TestRenewedRejects(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tests := []struct {
		name    string
		answer  func(st *agentstate.State) *controlproto.Certificate
		wantErr string
	}{
		{"controller refused", func(*agentstate.State) *controlproto.Certificate {
			return &controlproto.Certificate{Error: "this device was revoked"}
		}, "revoked"},
		{"garbage", func(*agentstate.State) *controlproto.Certificate {
			return &controlproto.Certificate{Certificate: "-----BEGIN junk"}
		}, "not a PEM certificate"},
		{"another key", func(*agentstate.State) *controlproto.Certificate {
			return &controlproto.Certificate{Certificate: string(ca.issue(t, otherKey.Public(), "dev-1", "client", now, now.Add(time.Hour)))}
		}, "key"},
		{"another identity", func(st *agentstate.State) *controlproto.Certificate {
			return &controlproto.Certificate{Certificate: string(ca.issue(t, st.TLSKey.Public(), "dev-2", "client", now, now.Add(time.Hour)))}
		}, "dev-2"},
		{"another kind", func(st *agentstate.State) *controlproto.Certificate {
			return &controlproto.Certificate{Certificate: string(ca.issue(t, st.TLSKey.Public(), "dev-1", "gateway", now, now.Add(time.Hour)))}
		}, "gateway"},
		{"another CA", func(st *agentstate.State) *controlproto.Certificate {
			return &controlproto.Certificate{Certificate: string(other.issue(t, st.TLSKey.Public(), "dev-1", "client", now, now.Add(time.Hour)))}
		}, "pinned controller CA"},
		{"already expired", func(st *agentstate.State) *controlproto.Certificate {
			return &controlproto.Certificate{Certificate: string(ca.issue(t, st.TLSKey.Public(), "dev-1", "client", now.Add(-time.Hour), now.Add(-time.Minute)))}
		}, "pinned controller CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, r, clk := setup(t, ca, now.Add(-50*time.Minute), time.Hour)
			clk.Set(now)
			before, _ := os.ReadFile(filepath.Join(st.Dir, "cert.pem"))
			if f, _ := r.Renewal(true); f == nil {
				t.Fatal("not due")
			}
			err := r.Renewed(tt.answer(st))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Renewed = %v, want an error containing %q", err, tt.wantErr)
			}
			after, _ := os.ReadFile(filepath.Join(st.Dir, "cert.pem"))
			if string(before) != string(after) || r.Renewals() != 0 {
				t.Error("certificate replaced by a rejected answer")
			}
			if f, wait := r.Renewal(false); f != nil || wait <= 0 {
				t.Errorf("asked again at once after a refusal (wait %v)", wait)
			}
			clk.Set(now.Add(certrenew.DefaultRetryAfter + time.Second))
			if f, _ := r.Renewal(false); f == nil {
				t.Error("not asked again after RetryAfter")
			}
		})
	}
}

// An expired certificate is reported with what to do, not silently
// retried.
func TestExpiredSaysWhatToDo(t *testing.T) {
	ca := newCA(t)
	start := time.Now().Add(-2 * time.Hour)
	_, r, clk := setup(t, ca, start, time.Hour)
	clk.Set(start.Add(30 * time.Minute))
	if err := r.Expired(); err != nil {
		t.Fatalf("Expired while valid = %v", err)
	}
	clk.Set(start.Add(2 * time.Hour))
	if f, _ := r.Renewal(true); f != nil {
		t.Error("asked to renew an expired certificate: the controller refuses it")
	}
	err := r.Expired()
	if !errors.Is(err, certrenew.ErrExpired) || !strings.Contains(err.Error(), "cordon login") {
		t.Fatalf("Expired = %v, want ErrExpired saying to run cordon login", err)
	}
}

func mustCert(t *testing.T, st *agentstate.State) *x509.Certificate {
	t.Helper()
	c, err := st.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// handshakeSerial runs one TLS handshake of tc against a server requiring
// a client certificate from ca, and returns the serial the server saw.
func handshakeSerial(t *testing.T, ca *testCA, tc *tls.Config) *big.Int {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), DNSNames: []string{"ctl.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	cs, cc := net.Pipe()
	defer cs.Close()
	defer cc.Close()
	srv := tls.Server(cs, &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: pool, NextProtos: []string{"test/1"},
	})
	c := tc.Clone()
	c.ServerName = "ctl.test"
	cli := tls.Client(cc, c)
	errc := make(chan error, 1)
	go func() { errc <- cli.Handshake() }()
	if err := srv.Handshake(); err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	return srv.ConnectionState().PeerCertificates[0].SerialNumber
}
