package client

import (
	"strings"
	"testing"
)

// --metrics-listen takes loopback addresses only.
func TestListenMetricsLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "10.0.0.1:9469", "example.com:9469", "127.0.0.1"} {
		if ln, err := listenMetrics(addr); err == nil {
			ln.Close()
			t.Errorf("listenMetrics(%q) succeeded, want a refusal", addr)
		} else if !strings.Contains(err.Error(), "--metrics-listen") {
			t.Errorf("listenMetrics(%q): %v, want an error naming the flag", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		ln, err := listenMetrics(addr)
		if err != nil {
			t.Errorf("listenMetrics(%q): %v", addr, err)
			continue
		}
		ln.Close()
	}
}
