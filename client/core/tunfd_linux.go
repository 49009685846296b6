package core

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// tunFromFD wraps the TUN file descriptor a shell opened. A shell that
// configured the network itself (Android) gets a device that does not
// watch the link through netlink, which an app may not open there.
func tunFromFD(fd int, osNetwork bool) (tun.Device, error) {
	if fd < 0 {
		return nil, fmt.Errorf("tun file descriptor %d: not a descriptor; pass the one the OS gave (VpnService.Builder.establish().detachFd())", fd)
	}
	if osNetwork {
		dev, _, err := tun.CreateUnmonitoredTUNFromFD(fd)
		if err != nil {
			return nil, fmt.Errorf("tun file descriptor %d: %w", fd, err)
		}
		return dev, nil
	}
	// Non-blocking before the runtime's poller takes it, so that Stop's
	// close ends a read in progress (as tun.CreateTUN does).
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun file descriptor %d: %w", fd, err)
	}
	f := os.NewFile(uintptr(fd), "tun")
	dev, err := tun.CreateTUNFromFile(f, MTU)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tun file descriptor %d: %w", fd, err)
	}
	return dev, nil
}
