package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The UDP app of these tests: a datagram echo on lab's address, which no
// other test gives an app.
const (
	udpEchoAddr = "10.20.0.12:7000"
	bigDatagram = 4000 // bytes: three fragments over a 1,420-byte tunnel
)

// startUDPEcho echoes every datagram it receives on addr in ns, until the
// test ends.
func startUDPEcho(t *testing.T, ns netNS, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.do(func() (err error) { pc, err = net.ListenPacket("udp", addr); return }); err != nil {
		t.Fatalf("listen udp %s in %s: %v", addr, ns.name, err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	wg.Go(func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	})
}

// udpRoundTrip sends one datagram of n random bytes to addr from ns and
// waits up to wait for the same bytes to come back.
func udpRoundTrip(ns netNS, addr string, n int, wait time.Duration) error {
	c, err := ns.dialTimeout("udp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	msg := make([]byte, n)
	rand.Read(msg)
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("send %d bytes: %w", n, err)
	}
	got := make([]byte, 65535)
	m, err := c.Read(got)
	if err != nil {
		return fmt.Errorf("no echo of %d bytes: %w", n, err)
	}
	if !bytes.Equal(got[:m], msg) {
		return fmt.Errorf("echo of %d bytes came back as %d different bytes", n, m)
	}
	return nil
}

// addUDPApp starts the UDP echo, makes it app "telemetry" with a rule for
// the clinicians, and waits until the nurse reaches it with a small
// datagram.
func addUDPApp(w *world) {
	t := w.t
	t.Helper()
	startUDPEcho(t, w.app, udpEchoAddr)
	host, port, _ := net.SplitHostPort(udpEchoAddr)
	w.mustCtl("", "app", "create", "telemetry", "--segment", segmentName, "--dns-name", "telemetry.hosp.internal", "--address", host,
		"--proto", "udp", "--port", port, "--class", "internal")
	w.mustCtl("", "rule", "create", "clinicians-telemetry", "--group", groupName, "--app", "telemetry")
	waitFor(t, 20*time.Second, "nurse to reach the UDP app", func() error {
		w.checkAlive()
		return udpRoundTrip(w.nurse.ns, udpEchoAddr, 100, time.Second)
	})
}

// A UDP app whose datagrams (4,000 bytes) fragment on the way works through
// the tunnel, both ways: the gateway passes a datagram's later fragments by
// its admitted first one. A device without a rule for the app still gets
// nothing through, fragments or not.
func TestUDPAppWithFragmentingDatagrams(t *testing.T) {
	w := newWorld(t)
	addUDPApp(w)
	for i := range 5 {
		if err := udpRoundTrip(w.nurse.ns, udpEchoAddr, bigDatagram, 3*time.Second); err != nil {
			t.Fatalf("datagram %d of %d bytes: %v", i, bigDatagram, err)
		}
	}
	// The same size that a single packet would carry whole also works, and
	// the largest a UDP datagram can be.
	if err := udpRoundTrip(w.nurse.ns, udpEchoAddr, 65507, 5*time.Second); err != nil {
		t.Errorf("datagram of 65,507 bytes: %v", err)
	}
	// clerk has no rule: neither the small nor the fragmented datagram
	// gets an answer.
	for _, n := range []int{100, bigDatagram} {
		if err := udpRoundTrip(w.clerk.ns, udpEchoAddr, n, 2*time.Second); err == nil {
			t.Errorf("LEAK: clerk got an echo of %d bytes from the UDP app it has no rule for", n)
		}
	}
}

// The path between the gateway and the apps is narrower than the tunnel
// (MTU 1,280 on the gateway's app-side link; the app host does not know):
// a TCP transfer of a few MB works both ways without black-holing, because
// the gateway clamps the MSS of the SYN and the SYN-ACK to the narrowest
// route of the two directions ('rt mtu'), so neither end sends a segment
// the link cannot carry. A datagram that does not fit and may not be
// fragmented (DF) draws an ICMP fragmentation-needed from the gateway host,
// which is counted there, passes the authorizer to the client (logged) and
// teaches the client's kernel the path MTU: not silence.
func TestTCPOverNarrowPath(t *testing.T) {
	w := newWorld(t)
	ip(t, w.gw, "link", "set", "app0", "mtu", "1280")
	out, err := sh("ip", "netns", "exec", w.gw.name, "nft", "list", "chain", "inet", "cordon", "forward")
	if err != nil {
		t.Fatalf("nft list chain: %v\n%s", err, out)
	}
	if n := strings.Count(out, "tcp option maxseg size set rt mtu"); n != 2 {
		t.Errorf("forward chain has %d MSS clamp rules, want 2:\n%s", n, out)
	}
	w.waitReach(w.nurse, w.svcs["ehr"], 20*time.Second)

	const size = 4 << 20
	e, err := openEcho(w.nurse.ns, ehrAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	// Both ends' MSS (less TCP options) fit the 1,280-byte link. Without
	// the clamp each would be 1,380 (the tunnel's): the app's 1,420-byte
	// segments would not fit the link.
	for _, end := range []struct {
		ns   netNS
		name string
		filt string
	}{{w.nurse.ns, "client", "dport = :80"}, {w.app, "app", "sport = :80"}} {
		if mss := connMSS(t, end.ns, end.filt); mss == 0 || mss > 1280-40 {
			t.Errorf("the %s's connection uses MSS %d, want at most %d (the app-side link's MTU less 40)", end.name, mss, 1280-40)
		}
	}

	// Up and down at once: the echo sends back what it receives.
	msg := make([]byte, size)
	rand.Read(msg)
	start := time.Now()
	e.SetDeadline(start.Add(60 * time.Second))
	sent := make(chan error, 1)
	go func() {
		_, err := e.Write(msg)
		sent <- err
	}()
	got := make([]byte, size)
	if _, err := io.ReadFull(e.r, got); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("black hole: the echo stalled after %v: %v", time.Since(start).Round(time.Millisecond), err)
		}
		t.Fatalf("read the echo: %v", err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("send: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("the echo differs from what was sent")
	}
	t.Logf("%d MB each way over a 1,280-byte path in %v", size>>20, time.Since(start).Round(time.Millisecond))

	// A UDP datagram with DF set that fits the tunnel but not the link.
	addUDPApp(w)
	if n := nftCounter(t, w, "packet_too_big_sent"); n != 0 {
		t.Fatalf("packet_too_big_sent = %d before any packet was too big", n)
	}
	c, err := w.nurse.ns.dialTimeout("udp", udpEchoAddr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := setDF(c); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the client's kernel to learn the 1,280-byte path MTU", func() error {
		_, err := c.Write(make([]byte, 1300)) // 1,328 bytes of IP
		if errors.Is(err, syscall.EMSGSIZE) {
			return nil
		}
		return fmt.Errorf("send of 1,300 bytes with DF: %v, want EMSGSIZE once the ICMP arrived", err)
	})
	if n := nftCounter(t, w, "packet_too_big_sent"); n == 0 {
		t.Error("the gateway host counted no packet-too-big sent")
	}
	waitFor(t, 5*time.Second, "the gateway to log the path MTU signal", func() error {
		if !strings.Contains(w.gateway.logs(), "path MTU: packet too big") {
			return errors.New("no path MTU line in the gateway's log")
		}
		return nil
	})
}

// setDF makes the UDP socket c send with DF and never fragment locally
// (IP_PMTUDISC_DO): a send larger than the known path MTU fails.
func setDF(c net.Conn) error {
	raw, err := c.(*net.UDPConn).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_MTU_DISCOVER, syscall.IP_PMTUDISC_DO)
	}); err != nil {
		return err
	}
	return serr
}

var mssRE = regexp.MustCompile(`\bmss:(\d+)`)

// connMSS returns the MSS of the established TCP connection in ns that
// matches the ss filter filt, as ss reports it (0: none found).
func connMSS(t *testing.T, ns netNS, filt string) int {
	t.Helper()
	out, err := sh("ip", append([]string{"netns", "exec", ns.name, "ss", "-tinH", "state", "established"}, strings.Fields(filt)...)...)
	if err != nil {
		t.Fatalf("ss: %v\n%s", err, out)
	}
	m := mssRE.FindStringSubmatch(out)
	if m == nil {
		t.Logf("ss in %s: %s", ns.name, out)
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// nftCounter reads a named counter of the gateway's cordon table.
func nftCounter(t *testing.T, w *world, name string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, errOut, code := run(ctx, "", nil, "ip", "netns", "exec", w.gw.name, "nft", "list", "counter", "inet", "cordon", name)
	if code != 0 {
		t.Fatalf("nft list counter %s: exit %d: %s", name, code, errOut)
	}
	m := counterPackets.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("nft list counter %s: no packets in %q", name, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
