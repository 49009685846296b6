package core

import (
	"fmt"
	"os"

	"golang.zx2c4.com/wireguard/tun"
)

// tunFromFD wraps the TUN file descriptor a shell opened. A shell that
// configured the network itself (Android) gets a device that does not
// watch the link through netlink, which an app may not open there.
func tunFromFD(fd int, shellNetwork bool) (tun.Device, error) {
	if fd < 0 {
		return nil, fmt.Errorf("tun file descriptor %d: not a descriptor; pass the one the OS gave (VpnService.Builder.establish().detachFd())", fd)
	}
	if shellNetwork {
		dev, _, err := tun.CreateUnmonitoredTUNFromFD(fd)
		if err != nil {
			return nil, fmt.Errorf("tun file descriptor %d: %w", fd, err)
		}
		return dev, nil
	}
	dev, err := tun.CreateTUNFromFile(os.NewFile(uintptr(fd), "tun"), MTU)
	if err != nil {
		return nil, fmt.Errorf("tun file descriptor %d: %w", fd, err)
	}
	return dev, nil
}
