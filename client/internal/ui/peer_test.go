package ui

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestProcAddr(t *testing.T) {
	// As /proc/net/tcp prints them on a little-endian machine (the tests
	// run on amd64 and arm64).
	for _, tc := range []struct {
		ap   string
		v6   bool
		want string
	}{
		{"127.0.0.1:8080", false, "0100007F:1F90"},
		{"127.0.0.1:8080", true, "0000000000000000FFFF00000100007F:1F90"},
		{"[::1]:443", true, "00000000000000000000000001000000:01BB"},
	} {
		if got := procAddr(netip.MustParseAddrPort(tc.ap), tc.v6); got != tc.want {
			t.Errorf("procAddr(%s, v6=%v) = %s, want %s", tc.ap, tc.v6, got, tc.want)
		}
	}
}

const sampleTable = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1062 1 000000002dc4e4c3 100 0 0 10 0
   1: 0100007F:8BB5 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:8BB5 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 20 4 30 10 -1
   3: short line
`

func TestFindUID(t *testing.T) {
	for _, tc := range []struct {
		local, remote string
		uid           int
		ok            bool
	}{
		{"0100007F:8BB5", "0100007F:1F90", 1000, true}, // the browser's end
		{"0100007F:1F90", "0100007F:8BB5", 0, true},    // the page's end
		{"0100007F:8BB6", "0100007F:1F90", -1, false},
	} {
		uid, ok := findUID([]byte(sampleTable), tc.local, tc.remote)
		if uid != tc.uid || ok != tc.ok {
			t.Errorf("findUID(%s -> %s) = %d, %v; want %d, %v", tc.local, tc.remote, uid, ok, tc.uid, tc.ok)
		}
	}
}

func FuzzFindUID(f *testing.F) {
	f.Add([]byte(sampleTable), "0100007F:8BB5", "0100007F:1F90")
	f.Add([]byte("0: a b c d e f -1\n"), "a", "b")
	f.Fuzz(func(t *testing.T, table []byte, local, remote string) {
		if uid, ok := findUID(table, local, remote); ok && uid < 0 {
			t.Fatalf("negative uid %d", uid)
		}
	})
}

// TestPeerUID: the kernel's answer for a connection of this process.
func TestPeerUID(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := "127.0.0.1:0"
		if network == "tcp6" {
			addr = "[::1]:0"
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Logf("%s: %v (no %s loopback here)", network, err, network)
			continue
		}
		defer ln.Close()
		c, err := net.Dial(network, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if uid, err := peerUID(s); err != nil || uid != os.Getuid() {
			t.Errorf("%s: peerUID = %d, %v; want %d", network, uid, err, os.Getuid())
		}
	}
}

// TestOtherUserRefused: another user of the computer, with the session
// cookie, is refused. The test binary fetches the page again as nobody.
func TestOtherUserRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a process as another user")
	}
	srv := startServer(t, Config{Tunnel: nurseTunnel(), SignIn: ClientSignIn{StateDir: t.TempDir()}})
	cookie := redeem(t, srv)
	u := "http://" + srv.Addr().String() + "/"
	if a := get(t, u, func(r *http.Request) { r.AddCookie(cookie) }); a.code != http.StatusOK {
		t.Fatalf("own user: %d %q", a.code, a.body)
	}

	// A copy of this test binary that nobody may run.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "cordon-ui-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "ui.test")
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestHelperFetch$")
	cmd.Env = []string{"CORDON_UI_FETCH=" + u, "CORDON_UI_COOKIE=" + cookie.Name + "=" + cookie.Value}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("fetch as nobody: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "status 403") || !strings.Contains(string(out), whyPeer) {
		t.Errorf("fetch as nobody with the cookie:\n%s\nwant 403 %q", out, whyPeer)
	}
}

// TestHelperFetch is TestOtherUserRefused's other user.
func TestHelperFetch(t *testing.T) {
	u := os.Getenv("CORDON_UI_FETCH")
	if u == "" {
		t.Skip("helper of TestOtherUserRefused")
	}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Cookie", os.Getenv("CORDON_UI_COOKIE"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	os.Stdout.WriteString("status " + resp.Status + "\n" + string(body))
}
