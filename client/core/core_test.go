package core

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cordonhq/cordon/client/internal/client"
	"github.com/cordonhq/cordon/client/internal/reach"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// recorder is a shell's Events and LogSink.
type recorder struct {
	mu     sync.Mutex
	events []string // "kind payload"
	logs   []string
}

func (r *recorder) Event(kind, payload string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, kind+" "+payload)
}

func (r *recorder) Log(level int, line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logs = append(r.logs, slog.Level(level).String()+" "+line)
}

func (r *recorder) kinds() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		out = append(out, strings.SplitN(e, " ", 2)[0])
	}
	return out
}

func selfSignedPEM(t *testing.T) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// Configure keeps a good CA for the sign-in (owner-only) and refuses
// anything else with an error that says what to pass; after Close every
// call fails with ErrClosed.
func TestConfigureAndClose(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	c, err := New(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory: %v, %v", fi, err)
	}
	ca := selfSignedPEM(t)
	for name, bad := range map[string][]byte{
		"empty":       nil,
		"not pem":     []byte("hello"),
		"a key":       pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}),
		"garbage der": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}),
	} {
		if err := c.Configure("https://ctl:8443", bad); err == nil || !strings.Contains(err.Error(), "controller CA") {
			t.Errorf("%s: err %v", name, err)
		}
	}
	if err := c.Configure("", ca); err == nil {
		t.Error("an empty controller URL was accepted")
	}
	if err := c.Configure("https://ctl:8443", ca); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, caFileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("kept CA: %v, %v", fi, err)
	}
	if _, err := c.Status(); !errors.Is(err, client.ErrNotUp) {
		t.Errorf("status with no tunnel: %v", err)
	}
	c.Close()
	c.Close() // idempotent
	if err := c.SignIn("nurse", "pw", "123456"); !errors.Is(err, ErrClosed) {
		t.Errorf("sign-in after Close: %v", err)
	}
	if err := c.StartUserspace("127.0.0.1:0", ""); !errors.Is(err, ErrClosed) {
		t.Errorf("start after Close: %v", err)
	}
	if _, err := New("", nil, nil); err == nil {
		t.Error("New without a state directory")
	}
}

// A tunnel that cannot start (the device never signed in) tells the
// shell through a tunnel event with the reason, and the core can start
// again after.
func TestStartNotSignedIn(t *testing.T) {
	rec := &recorder{}
	c, err := New(t.TempDir(), rec, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.StartUserspace("127.0.0.1:0", ""); err != nil {
		t.Fatal(err)
	}
	var stopped tunnelEvent
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && stopped.State == "" {
		rec.mu.Lock()
		for _, e := range rec.events {
			if p, ok := strings.CutPrefix(e, KindTunnel+" "); ok {
				var te tunnelEvent
				json.Unmarshal([]byte(p), &te)
				if te.State == "stopped" {
					stopped = te
				}
			}
		}
		rec.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	if stopped.State != "stopped" || !strings.Contains(stopped.Error, "not signed in") {
		t.Fatalf("tunnel event %+v; events %v", stopped, rec.events)
	}
	for c.Running() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c.Running() {
		t.Fatal("still running after it stopped")
	}
	c.Stop() // nothing to stop: returns
}

// The posture facts the shell sets reach the tunnel's collection; bad
// ones are an error and leave the last good ones; empty clears them.
func TestSetPosture(t *testing.T) {
	c, err := New(t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	good := `{"os":"ios","os_version":"18.2","screen_lock":{"state":"yes"},"integrity":{"state":"no","detail":"jailbreak signals"}}`
	if err := c.SetPosture(good); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPosture(`{"jailbroken":true}`); err == nil || !strings.Contains(err.Error(), "posture facts") {
		t.Errorf("unknown field: %v", err)
	}
	if got := string(c.postureFacts()); got != good {
		t.Errorf("facts after a refused update: %s", got)
	}
	if err := c.SetPosture(""); err != nil || c.postureFacts() != nil {
		t.Errorf("clear: %v, %s", err, c.postureFacts())
	}
}

// The events a status carries go out only when they changed, a newer
// status replaces one not yet delivered, and the tunnel's stop makes the
// next run tell everything again.
func TestDispatcherSendsChanges(t *testing.T) {
	rec := &recorder{}
	d := &dispatcher{ev: rec, last: map[string]string{}} // no goroutine: the test flushes
	st := func(state string, ok bool) client.Status {
		v := reach.For(reach.ReasonOK)
		if !ok {
			v = reach.For(reach.ReasonGatewayUnreachable)
		}
		return client.Status{ControlConnected: true, Session: &controlproto.SessionInfo{ID: "s1", State: state},
			Gateways: []client.GatewayStatus{{ID: "gw1", Apps: []client.AppStatus{{
				App: controlproto.App{Name: "ehr", Addr: netip.MustParsePrefix("10.20.0.10/32")}, State: v}}}}}
	}
	var got []string
	step := func(f func()) {
		f()
		n := len(rec.kinds())
		d.flush() // the goroutine's work, here on the test's
		got = append(got, strings.Join(rec.kinds()[n:], ","))
	}
	step(func() { d.status(st("active", false)) })
	step(func() { d.status(st("active", false)) })
	step(func() { d.status(st("active", true)) })
	step(func() { d.status(st("active", false)); d.status(st("active", true)) }) // latest only
	step(func() { d.send(KindTunnel, tunnelEvent{State: "stopped", Mode: "tun"}) })
	step(func() { d.status(st("ended", true)) })
	want := []string{
		"control,session,apps,posture,step_up,status",
		"status",
		"apps,status",
		"status",
		"tunnel",
		"control,session,apps,posture,step_up,status",
	}
	if strings.Join(got, " | ") != strings.Join(want, " | ") {
		t.Fatalf("events per step:\n got %q\nwant %q", got, want)
	}
	var apps []appEvent
	for _, e := range rec.events {
		if p, ok := strings.CutPrefix(e, KindApps+" "); ok {
			json.Unmarshal([]byte(p), &apps)
		}
	}
	if len(apps) != 1 || !apps[0].Reachable || apps[0].Reason != "ok" || apps[0].Addr != "10.20.0.10/32" {
		t.Errorf("last apps event %+v", apps)
	}
}

// Log lines reach the sink with their level and attributes, without the
// time, and below the minimum level nothing is formatted.
func TestLogHandler(t *testing.T) {
	rec := &recorder{}
	log := slog.New(newLogHandler(rec, slog.LevelInfo)).With("device", "dev-1")
	log.Debug("hidden")
	log.WithGroup("g").Warn("gateway not answering", "gateway", "gw1")
	slog.New(newLogHandler(nil, slog.LevelDebug)).Error("no sink: dropped")
	if len(rec.logs) != 1 {
		t.Fatalf("logs %q", rec.logs)
	}
	l := rec.logs[0]
	if !strings.HasPrefix(l, "WARN level=WARN msg=\"gateway not answering\" device=dev-1 g.gateway=gw1") || strings.Contains(l, "time=") {
		t.Errorf("line %q", l)
	}
}
