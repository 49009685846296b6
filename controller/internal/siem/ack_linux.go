package siem

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// sendQueue returns the bytes of c not yet sent or not yet acknowledged
// by the receiver (SIOCOUTQ), and whether the connection is still up
// (established, or closed by the receiver only after acknowledging:
// CLOSE_WAIT). A reset connection also has an empty queue, its bytes
// dropped: the state tells the two apart.
func sendQueue(c *net.TCPConn) (queued int, up bool, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, false, err
	}
	var (
		state uint8
		serr  error
	)
	if err := raw.Control(func(fd uintptr) {
		queued, serr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
		if serr != nil {
			return
		}
		var info *unix.TCPInfo
		if info, serr = unix.GetsockoptTCPInfo(int(fd), unix.SOL_TCP, unix.TCP_INFO); serr == nil {
			state = info.State
		}
	}); err != nil {
		return 0, false, fmt.Errorf("read the socket's send queue: %w", err)
	}
	if serr != nil {
		return 0, false, fmt.Errorf("read the socket's send queue: %w", serr)
	}
	const established, closeWait = 1, 8 // linux/tcp_states.h
	return queued, state == established || state == closeWait, nil
}

// waitAcked waits until the receiver has acknowledged everything written
// to c, polling its send queue (50 µs, doubling up to 20 ms), until
// deadline or ctx ends.
func waitAcked(ctx context.Context, c *net.TCPConn, deadline time.Time) error {
	wait := 50 * time.Microsecond
	var t *time.Timer
	for {
		queued, up, err := sendQueue(c)
		if err != nil {
			return err
		}
		if !up {
			return fmt.Errorf("%w before acknowledging what was sent", errPeerClosed)
		}
		if queued == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the receiver did not acknowledge %d bytes in time: %w", queued, errNotAcked)
		}
		if t == nil {
			t = time.NewTimer(wait)
			defer t.Stop()
		} else {
			t.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the receiver did not acknowledge %d bytes: %w", queued, context.Cause(ctx))
		case <-t.C:
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}

var errNotAcked = errors.New("not acknowledged")
