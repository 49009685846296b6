//go:build !linux

package core

import (
	"fmt"
	"os"

	"golang.zx2c4.com/wireguard/tun"
)

// tunFromFD wraps the TUN file descriptor a shell opened (an iOS or macOS
// utun descriptor).
func tunFromFD(fd int, _ bool) (tun.Device, error) {
	if fd < 0 {
		return nil, fmt.Errorf("tun file descriptor %d: not a descriptor; pass the one the OS gave", fd)
	}
	f := os.NewFile(uintptr(fd), "tun")
	dev, err := tun.CreateTUNFromFile(f, MTU)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("tun file descriptor %d: %w", fd, err)
	}
	return dev, nil
}
