package ui

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// peerUID is the user owning the other end of c, a TCP connection over
// loopback, from the kernel's socket tables (/proc/net/tcp, tcp6): the
// peer's socket is the one whose local address is c's remote address and
// whose remote address is c's local one.
func peerUID(c net.Conn) (int, error) {
	local, ok1 := c.LocalAddr().(*net.TCPAddr)
	remote, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return -1, errors.New("not a TCP connection")
	}
	l, r := local.AddrPort(), remote.AddrPort()
	for _, v6 := range []bool{false, true} {
		file := "/proc/net/tcp"
		if v6 {
			file = "/proc/net/tcp6"
		} else if !l.Addr().Unmap().Is4() {
			continue
		}
		table, err := os.ReadFile(file)
		if err != nil {
			return -1, fmt.Errorf("read the kernel's socket table: %w", err)
		}
		if uid, ok := findUID(table, procAddr(r, v6), procAddr(l, v6)); ok {
			return uid, nil
		}
	}
	return -1, fmt.Errorf("connection from %s is not in the kernel's socket table", r)
}

// procAddr is ap as /proc/net/tcp{,6} prints it: the address's 32-bit
// words in the machine's byte order, then the port, all in hex.
func procAddr(ap netip.AddrPort, v6 bool) string {
	var b []byte
	if v6 {
		a := ap.Addr().As16() // IPv4 as ::ffff:a.b.c.d
		b = a[:]
	} else {
		a := ap.Addr().Unmap().As4()
		b = a[:]
	}
	var s strings.Builder
	for i := 0; i < len(b); i += 4 {
		fmt.Fprintf(&s, "%08X", binary.NativeEndian.Uint32(b[i:i+4]))
	}
	fmt.Fprintf(&s, ":%04X", ap.Port())
	return s.String()
}

// findUID finds the socket local -> remote in a /proc/net/tcp{,6} table
// and returns its owner. Malformed lines are skipped.
func findUID(table []byte, local, remote string) (int, bool) {
	sc := bufio.NewScanner(bytes.NewReader(table))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid ...
		if len(f) < 8 || f[1] != local || f[2] != remote {
			continue
		}
		uid, err := strconv.Atoi(f[7])
		if err != nil || uid < 0 {
			continue
		}
		return uid, true
	}
	return -1, false
}
