package siem

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// waitAcked waits until the socket's send queue is empty (SIOCOUTQ: bytes
// not yet sent or not yet acknowledged) while the connection is still
// established, or was closed by the receiver only after acknowledging
// (CLOSE_WAIT). A reset connection also has an empty queue, its bytes
// dropped: the state tells the two apart.
func waitAcked(ctx context.Context, c *net.TCPConn, deadline time.Time) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	wait := 50 * time.Microsecond
	var t *time.Timer
	for {
		var (
			queued int
			state  uint8
			serr   error
		)
		if err := raw.Control(func(fd uintptr) {
			queued, serr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
			if serr != nil {
				return
			}
			var info *unix.TCPInfo
			info, serr = unix.GetsockoptTCPInfo(int(fd), unix.SOL_TCP, unix.TCP_INFO)
			if serr == nil {
				state = info.State
			}
		}); err != nil {
			return fmt.Errorf("read the socket's send queue: %w", err)
		}
		if serr != nil {
			return fmt.Errorf("read the socket's send queue: %w", serr)
		}
		const established, closeWait = 1, 8 // linux/tcp_states.h
		if state != established && state != closeWait {
			return fmt.Errorf("%w before acknowledging what was sent (TCP state %d)", errPeerClosed, state)
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
			return context.Cause(ctx)
		case <-t.C:
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}

var errNotAcked = errors.New("not acknowledged")
