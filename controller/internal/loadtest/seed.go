//go:build loadtest

package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/cordonhq/cordon/controller/internal/ca"
	"github.com/cordonhq/cordon/controller/internal/store"
	"github.com/cordonhq/cordon/controller/internal/store/sqlite"
	"github.com/cordonhq/cordon/pkg/policy"
	"github.com/cordonhq/cordon/pkg/wgkey"
)

// scenario is the directory the harness seeds.
type scenario struct {
	devices int // N: users, each with one device and an active session
	apps    int // total apps in the segment
	common  int // apps granted to group "all"
	depts   int // department groups
	spare   int // apps nobody is granted at start (grant-all uses them)
}

func (sc scenario) perDept() int { return (sc.apps - sc.common - sc.spare) / sc.depts }

func (sc scenario) validate() error {
	if sc.devices < 1 || sc.depts < 2 || sc.spare < 1 || sc.common < 0 || sc.perDept() < 1 {
		return fmt.Errorf("scenario %+v: want at least 1 device, 2 departments, 1 spare app and 1 app per department", sc)
	}
	return nil
}

// Names of the scenario's objects.
const (
	segmentName   = "ward"
	groupAll      = "all"
	gatewayID     = "gw-load-1"
	gatewayListen = "127.0.0.1:51820" // only announced; nothing listens
)

func userName(i int) string     { return fmt.Sprintf("u%05d", i) }
func deviceID(i int) string     { return fmt.Sprintf("dev%05d", i) }
func deptGroup(d int) string    { return fmt.Sprintf("dept%02d", d) }
func commonApp(j int) string    { return fmt.Sprintf("c-%03d", j) }
func deptApp(d, j int) string   { return fmt.Sprintf("d%02d-%03d", d, j) }
func spareApp(j int) string     { return fmt.Sprintf("s-%03d", j) }
func ruleFor(app string) string { return "r-" + app }

// identity is one agent's certificate, signed by the controller's CA.
type identity struct {
	id   string
	kind string
	cert tls.Certificate
}

// seeded is what the harness needs to drive the seeded world.
type seeded struct {
	gateway identity
	clients []identity // clients[i] is device i of user i
	caPool  *x509.CertPool
}

// seed writes the scenario into dataDir: the controller's CA files
// directly, the database through the store package. The database is built
// in stageDir (a tmpfs such as /dev/shm when there is one: the store syncs
// every transaction, and 5N of them on a disk take minutes) and then copied
// into dataDir, where the controller runs on it with its normal
// durability.
func seed(ctx context.Context, sc scenario, stageDir, dataDir string) (*seeded, error) {
	if err := sc.validate(); err != nil {
		return nil, err
	}
	authority, err := ca.LoadOrCreate(dataDir)
	if err != nil {
		return nil, fmt.Errorf("create controller CA: %w", err)
	}
	dbPath := filepath.Join(stageDir, "cordon.db")
	st, err := sqlite.Open(ctx, dbPath)
	if err != nil {
		return nil, fmt.Errorf("open staging store: %w", err)
	}
	if err := seedStore(ctx, st, sc); err != nil {
		st.Close()
		return nil, err
	}
	if err := st.Close(); err != nil {
		return nil, fmt.Errorf("close staging store: %w", err)
	}
	if err := copyDB(stageDir, dataDir); err != nil {
		return nil, err
	}
	out := &seeded{caPool: authority.Pool(), clients: make([]identity, sc.devices)}
	if out.gateway, err = issue(authority, gatewayID, ca.KindGateway); err != nil {
		return nil, err
	}
	// Certificates in parallel: N ECDSA keys and signatures.
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next = make(chan int)
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				id, err := issue(authority, deviceID(i), ca.KindClient)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					continue
				}
				out.clients[i] = id
			}
		})
	}
	for i := range sc.devices {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

func seedStore(ctx context.Context, st store.Store, sc scenario) error {
	now := time.Now().UTC()
	if err := st.CreateSegment(ctx, store.Segment{Name: segmentName, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")}}); err != nil {
		return fmt.Errorf("seed segment: %w", err)
	}
	n := 0
	app := func(name string) error {
		addr := netip.AddrFrom4([4]byte{10, 20, byte(n / 250), byte(n%250 + 1)})
		n++
		return st.CreateApp(ctx, store.App{
			Name: name, Segment: segmentName, DNSName: name + ".hosp.internal",
			Addr: netip.PrefixFrom(addr, 32), Proto: policy.ProtoTCP,
			Ports: []policy.PortRange{{First: 443, Last: 443}}, Classification: store.ClassPHI,
		})
	}
	var apps []string
	for j := range sc.common {
		apps = append(apps, commonApp(j))
	}
	for d := range sc.depts {
		for j := range sc.perDept() {
			apps = append(apps, deptApp(d, j))
		}
	}
	for j := range sc.spare {
		apps = append(apps, spareApp(j))
	}
	for _, a := range apps {
		if err := app(a); err != nil {
			return fmt.Errorf("seed app %s: %w", a, err)
		}
	}
	all := make([]string, sc.devices)
	byDept := make([][]string, sc.depts)
	for i := range sc.devices {
		u := userName(i)
		if err := st.CreateUser(ctx, store.User{Name: u}); err != nil {
			return fmt.Errorf("seed user: %w", err)
		}
		all[i] = u
		byDept[i%sc.depts] = append(byDept[i%sc.depts], u)
	}
	if err := st.CreateGroup(ctx, store.Group{Name: groupAll, Members: all}); err != nil {
		return fmt.Errorf("seed group: %w", err)
	}
	for d := range sc.depts {
		if err := st.CreateGroup(ctx, store.Group{Name: deptGroup(d), Members: byDept[d]}); err != nil {
			return fmt.Errorf("seed group: %w", err)
		}
	}
	for j := range sc.common {
		if err := st.CreateRule(ctx, store.Rule{Name: ruleFor(commonApp(j)), Group: groupAll, App: commonApp(j)}); err != nil {
			return fmt.Errorf("seed rule: %w", err)
		}
	}
	for d := range sc.depts {
		for j := range sc.perDept() {
			if err := st.CreateRule(ctx, store.Rule{Name: ruleFor(deptApp(d, j)), Group: deptGroup(d), App: deptApp(d, j)}); err != nil {
				return fmt.Errorf("seed rule: %w", err)
			}
		}
	}
	// The gateway, enrolled the way the store knows: a token redeemed.
	secret := []byte("loadtest-gateway-token")
	hash := sha256.Sum256(secret)
	if err := st.CreateEnrollToken(ctx, store.EnrollToken{ID: "tok-load-1", Hash: hash[:], Segment: segmentName, Name: "gw-1",
		CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		return fmt.Errorf("seed gateway token: %w", err)
	}
	gk, err := wgkey.NewPrivate()
	if err != nil {
		return fmt.Errorf("seed gateway key: %w", err)
	}
	if _, err := st.RedeemEnrollToken(ctx, hash[:], now, store.Gateway{ID: gatewayID, PublicKey: gk.Public(), Endpoint: gatewayListen}); err != nil {
		return fmt.Errorf("seed gateway: %w", err)
	}
	for i := range sc.devices {
		k, err := wgkey.NewPrivate()
		if err != nil {
			return fmt.Errorf("seed device key: %w", err)
		}
		d, err := st.CreateDevice(ctx, store.Device{ID: deviceID(i), User: userName(i), Hostname: "ws-" + deviceID(i),
			PublicKey: k.Public(), CreatedAt: now, MFAAt: now})
		if err != nil {
			return fmt.Errorf("seed device: %w", err)
		}
		if _, err := st.StartSession(ctx, store.Session{ID: fmt.Sprintf("ses%05d", i), DeviceID: d.ID, User: d.User,
			Method: "password+totp", Source: "127.0.0.1", StartedAt: now, MFAAt: now}); err != nil {
			return fmt.Errorf("seed session: %w", err)
		}
	}
	return nil
}

// copyDB copies the closed staging database (and any WAL beside it) into
// dataDir, mode 0600 like the store creates it.
func copyDB(stageDir, dataDir string) error {
	names, err := filepath.Glob(filepath.Join(stageDir, "cordon.db*"))
	if err != nil {
		return fmt.Errorf("list staging database: %w", err)
	}
	for _, src := range names {
		if err := copyFile(src, filepath.Join(dataDir, filepath.Base(src))); err != nil {
			return fmt.Errorf("copy seeded database: %w", err)
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// issue makes an agent key and has the CA sign it, as enrollment does
// (the CA takes a CSR and names the agent itself).
func issue(authority *ca.CA, id, kind string) (identity, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return identity{}, fmt.Errorf("agent key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return identity{}, fmt.Errorf("agent csr: %w", err)
	}
	certPEM, err := authority.IssueAgentCert(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})), id, kind)
	if err != nil {
		return identity{}, fmt.Errorf("issue certificate for %s: %w", id, err)
	}
	b, _ := pem.Decode([]byte(certPEM))
	if b == nil {
		return identity{}, fmt.Errorf("issue certificate for %s: not PEM", id)
	}
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return identity{}, fmt.Errorf("parse certificate for %s: %w", id, err)
	}
	return identity{id: id, kind: kind, cert: tls.Certificate{Certificate: [][]byte{b.Bytes}, PrivateKey: key, Leaf: leaf}}, nil
}

// stagingRoot is where the database is built: a tmpfs when there is one.
func stagingRoot() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}
