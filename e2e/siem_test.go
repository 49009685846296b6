package e2e

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	rsyslogOnce sync.Once
	rsyslogErr  string
)

// needRsyslog installs rsyslog and its TLS driver from Debian's packages
// if they are missing (.ci/run installs them in CI), and skips, loudly,
// only when that is impossible.
func needRsyslog(t *testing.T) {
	t.Helper()
	rsyslogOnce.Do(func() {
		if haveTool("rsyslogd") && rsyslogGTLS() {
			return
		}
		for _, argv := range [][]string{{"apt-get", "update", "-qq"}, {"apt-get", "install", "-y", "-qq", "rsyslog", "rsyslog-gnutls"}} {
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			if out, err := cmd.CombinedOutput(); err != nil {
				rsyslogErr = fmt.Sprintf("%v: %v\n%s", argv, err, tail(string(out), 10))
				return
			}
		}
		if !haveTool("rsyslogd") || !rsyslogGTLS() {
			rsyslogErr = "rsyslog or rsyslog-gnutls still missing after apt-get install"
		}
	})
	if rsyslogErr != "" {
		t.Skipf("SKIP LOUDLY: the SIEM e2e needs rsyslog and rsyslog-gnutls (apt-get install rsyslog rsyslog-gnutls): %s", rsyslogErr)
	}
}

// rsyslogGTLS says whether rsyslog's GnuTLS stream driver is installed.
func rsyslogGTLS() bool {
	m, _ := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_gtls.so")
	m2, _ := filepath.Glob("/usr/lib/rsyslog/lmnsd_gtls.so")
	return len(m)+len(m2) > 0
}

// The receiver's side: rsyslog in the controller's namespace, on
// loopback, with a plain TCP input and a TLS input (GnuTLS, server
// certificate from a CA the test makes), each writing what it receives
// to a file in RFC 5424 form.
const rsyslogConf = `global(workDirectory="{{dir}}/work"
       defaultNetstreamDriverCAFile="{{dir}}/ca.pem"
       defaultNetstreamDriverCertFile="{{dir}}/server.pem"
       defaultNetstreamDriverKeyFile="{{dir}}/server.key")
module(load="imtcp")
template(name="rfc5424" type="string"
         string="<%PRI%>1 %TIMESTAMP:::date-rfc3339% %HOSTNAME% %APP-NAME% %PROCID% %MSGID% %STRUCTURED-DATA% %msg%\n")
ruleset(name="plain") { action(type="omfile" file="{{dir}}/plain.log" template="rfc5424") }
ruleset(name="tls") { action(type="omfile" file="{{dir}}/tls.log" template="rfc5424") }
input(type="imtcp" address="127.0.0.1" port="10514" ruleset="plain")
input(type="imtcp" address="127.0.0.1" port="10515" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
`

const siemConf = `hostname: ctl-e2e
sinks:
  - name: plain
    format: syslog
    transport: tcp
    address: 127.0.0.1:10514
  - name: tls
    format: syslog
    transport: tls
    address: 127.0.0.1:10515
    ca_file: {{dir}}/ca.pem
`

// sinkState is one row of 'cordonctl audit sinks -o json'.
type sinkState struct {
	Name      string `json:"name"`
	Cursor    int64  `json:"cursor"`
	LogSize   int64  `json:"log_size"`
	Lag       int64  `json:"lag"`
	Connected bool   `json:"connected"`
	LastError string `json:"last_error"`
}

// TestSIEMSyslogExactlyOnce: the controller streams the audit log to a
// real rsyslog over TCP and over TLS (RFC 5425 framing). Across two
// controller restarts and an rsyslog restart, with admin changes made
// before, between and while rsyslog is down, each of rsyslog's files
// holds every record from seq 1 to the sink's final cursor exactly once
// and in order, each with a leaf hash that is the hash of the record's
// line, and the signed checkpoints.
//
//	[ctl ns] cordon-controller --siem-config ──tcp 127.0.0.1:10514──> rsyslogd ──> plain.log
//	                                        └─tls 127.0.0.1:10515──> (gtls)   ──> tls.log
func TestSIEMSyslogExactlyOnce(t *testing.T) {
	requireE2E(t)
	dir := t.TempDir()
	cfg := prepareRsyslog(t, dir, siemConf)

	// The controller starts with rsyslog not yet there: its sinks retry.
	w := newWorld(t, withControllerArgs("--siem-config", cfg))
	startRsyslog := func(name string) *proc { return w.runRsyslog(dir, name) }
	changes := func(prefix string, n int) {
		for i := range n {
			w.mustCtl("", "segment", "create", fmt.Sprintf("siem-%s-%d", prefix, i), "--cidr", "10.97.0.0/24")
		}
	}
	// caughtUp waits until every sink has accepted at least every record
	// there is now (the newest seq in the trail).
	caughtUp := func(what string) int64 {
		newest := w.audit("--limit", "1")
		if len(newest) != 1 {
			t.Fatalf("audit list: %v", newest)
		}
		seq := newest[0].Seq
		waitFor(t, 60*time.Second, "the SIEM sinks to catch up "+what, func() error {
			var xs []sinkState
			w.ctlJSON(&xs, "audit", "sinks")
			if len(xs) != 2 {
				return fmt.Errorf("sinks %+v", xs)
			}
			for _, x := range xs {
				if x.Cursor < seq {
					return fmt.Errorf("sink %s at %d of %d (%s)", x.Name, x.Cursor, seq, x.LastError)
				}
			}
			return nil
		})
		return seq
	}

	rs := startRsyslog("rsyslog")
	changes("a", 3)
	caughtUp("after rsyslog started")

	// Controller restart.
	w.controller.stop()
	w.startController("controller-2")
	changes("b", 5)
	caughtUp("after a controller restart")

	// rsyslog restart, with changes while it is down.
	rs.stop()
	changes("c", 5)
	rs = startRsyslog("rsyslog-2")
	changes("d", 3)
	caughtUp("after an rsyslog restart")
	if l := w.controller.logs(); !strings.Contains(l, "SIEM sink not accepting") || !strings.Contains(l, "SIEM sink accepting again") {
		t.Fatalf("the controller did not see rsyslog go and come back:\n%s", tail(l, 30))
	}

	// Controller restart right after changes.
	changes("e", 5)
	w.controller.stop()
	w.startController("controller-3")
	changes("f", 3)
	size := caughtUp("after the second controller restart")
	w.controller.stop()

	for _, sink := range []string{"plain", "tls"} {
		var c struct {
			Seq        int64 `json:"seq"`
			Checkpoint int64 `json:"checkpoint"`
		}
		b, err := os.ReadFile(filepath.Join(w.ctlDataDir, "siem", sink+".cursor"))
		if err != nil || json.Unmarshal(b, &c) != nil {
			t.Fatalf("%s cursor file: %v %s", sink, err, b)
		}
		if c.Seq < size {
			t.Fatalf("%s: cursor %d, but the log had %d records the sink had acknowledged", sink, c.Seq, size)
		}
		file := filepath.Join(dir, sink+".log")
		var seqs, cps []int64
		waitFor(t, 20*time.Second, "rsyslog to write "+file, func() error {
			seqs, cps = readRsyslogFile(t, file)
			if int64(len(seqs)) < c.Seq {
				return fmt.Errorf("%d records in %s, cursor %d", len(seqs), file, c.Seq)
			}
			return nil
		})
		for i, s := range seqs {
			if s != int64(i)+1 {
				t.Fatalf("%s: line %d holds seq %d, want %d (every record once, in order): ...%v...", file, i+1, s, i+1, seqs[max(i-3, 0):min(i+3, len(seqs))])
			}
		}
		if int64(len(seqs)) != c.Seq {
			t.Fatalf("%s: %d records, the sink's cursor says %d", file, len(seqs), c.Seq)
		}
		if len(cps) == 0 || cps[len(cps)-1] > c.Seq {
			t.Fatalf("%s: checkpoints %v (cursor %d)", file, cps, c.Seq)
		}
		t.Logf("%s: records 1..%d once each, in order; %d checkpoints", file, c.Seq, len(cps))
	}
	rs.stop()
}

// prepareRsyslog writes, in dir, rsyslog's work directory, its
// certificates and its configuration (rsyslogConf), and the controller's
// SIEM configuration sinks (a template like siemConf), whose path it
// returns; it skips without rsyslog (needRsyslog).
func prepareRsyslog(t *testing.T, dir, sinks string) string {
	t.Helper()
	needRsyslog(t)
	os.MkdirAll(filepath.Join(dir, "work"), 0o700)
	writeSIEMCerts(t, dir)
	fill := func(s string) string { return string(bytes.ReplaceAll([]byte(s), []byte("{{dir}}"), []byte(dir))) }
	if err := os.WriteFile(filepath.Join(dir, "rsyslog.conf"), []byte(fill(rsyslogConf)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "siem.yaml")
	if err := os.WriteFile(cfg, []byte(fill(sinks)), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// runRsyslog starts rsyslog as prepared in dir (prepareRsyslog) in the
// controller's namespace, its process and log named name, and waits until
// both its inputs listen. It writes what it receives to dir/plain.log
// (TCP, port 10514) and dir/tls.log (TLS, port 10515).
func (w *world) runRsyslog(dir, name string) *proc {
	t := w.t
	t.Helper()
	p := w.start(w.ctl, name, "rsyslogd", "-n", "-f", filepath.Join(dir, "rsyslog.conf"), "-i", filepath.Join(dir, "rsyslogd.pid"))
	waitFor(t, 20*time.Second, "rsyslog to listen", func() error {
		if s := p.exited(); s != "" {
			t.Fatalf("%s\n%s", s, p.logs())
		}
		for _, port := range []string{"10514", "10515"} {
			if _, _, code := run(t.Context(), "", nil, "ip", "netns", "exec", w.ctl.name, "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/"+port); code != 0 {
				return fmt.Errorf("port %s not open", port)
			}
		}
		return nil
	})
	return p
}

var rsyslogLine = regexp.MustCompile(`^<\d+>1 \S+ \S+ cordon-controller \S+ (\S+) (.*)$`)

// readRsyslogFile returns the seqs of the records and the sizes of the
// checkpoints in an rsyslog file, checking each record's leaf hash.
func readRsyslogFile(t *testing.T, path string) (seqs, checkpoints []int64) {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	seqRE := regexp.MustCompile(`^\[cordon@32473 seq="(\d+)".* leaf="([^"]+)"\] (\{"seq":.*)$`)
	sizeRE := regexp.MustCompile(`^\[cordon-checkpoint@32473 .*size="(\d+)"`)
	for sc.Scan() {
		m := rsyslogLine.FindStringSubmatch(sc.Text())
		if m == nil {
			t.Fatalf("%s: not an RFC 5424 line from the controller: %q", path, sc.Text())
		}
		if m[1] == "audit.checkpoint" {
			c := sizeRE.FindStringSubmatch(m[2])
			if c == nil {
				t.Fatalf("%s: checkpoint line %q", path, sc.Text())
			}
			n, _ := strconv.ParseInt(c[1], 10, 64)
			checkpoints = append(checkpoints, n)
			continue
		}
		r := seqRE.FindStringSubmatch(m[2])
		if r == nil {
			t.Fatalf("%s: record line %q", path, sc.Text())
		}
		n, _ := strconv.ParseInt(r[1], 10, 64)
		sum := sha256.Sum256(append([]byte{0}, r[3]...))
		if base64.StdEncoding.EncodeToString(sum[:]) != r[2] {
			t.Fatalf("%s: seq %d: leaf %s is not the hash of the line %s", path, n, r[2], r[3])
		}
		seqs = append(seqs, n)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return seqs, checkpoints
}

// writeSIEMCerts writes a CA and rsyslog's server certificate (for
// 127.0.0.1) into dir.
func writeSIEMCerts(t *testing.T, dir string) {
	t.Helper()
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e SIEM CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write("ca.pem", "CERTIFICATE", caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	write("server.pem", "CERTIFICATE", der)
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	write("server.key", "PRIVATE KEY", kb)
}
