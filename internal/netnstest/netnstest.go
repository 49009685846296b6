// Package netnstest gives tests a private network namespace of their own.
package netnstest

import (
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// Enter moves the calling goroutine, locked to its OS thread, into a fresh
// network namespace until the test ends, so the test never touches the
// host's links, routes or nftables. It skips, saying why, when not root. It returns the namespace. Subtests run on their own
// goroutines: each must call it again.
func Enter(t *testing.T, why string) netns.NsHandle {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: " + why)
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current netns: %v", err)
	}
	ns, err := netns.New() // also switches this thread into it
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		defer ns.Close()
		if err := netns.Set(orig); err != nil {
			// Stay locked: the runtime retires this thread with the
			// goroutine instead of reusing it in the wrong namespace.
			t.Errorf("return to the original netns: %v", err)
			return
		}
		orig.Close()
		runtime.UnlockOSThread()
	})
	if ns.Equal(orig) {
		t.Fatal("netns.New left us in the original namespace")
	}
	return ns
}
