package main

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
)

// fakeSOCKS answers one CONNECT with reply code rep after checking the
// request is for 10.20.0.10:5201 without authentication.
func fakeSOCKS(t *testing.T, rep byte) net.Conn {
	t.Helper()
	client, server := net.Pipe()
	t.Cleanup(func() { client.Close(); server.Close() })
	go func() {
		defer server.Close()
		greet := make([]byte, 3)
		if _, err := io.ReadFull(server, greet); err != nil || !bytes.Equal(greet, []byte{5, 1, 0}) {
			t.Errorf("greeting %v, %v", greet, err)
			return
		}
		server.Write([]byte{5, 0})
		req := make([]byte, 10)
		if _, err := io.ReadFull(server, req); err != nil {
			t.Errorf("request: %v", err)
			return
		}
		if want := []byte{5, 1, 0, 1, 10, 20, 0, 10, 0x14, 0x51}; !bytes.Equal(req, want) {
			t.Errorf("request %v, want %v", req, want)
		}
		server.Write([]byte{5, rep, 0, 1, 127, 0, 0, 1, 0x04, 0x38})
	}()
	return client
}

func TestSOCKS5Connect(t *testing.T) {
	if err := socks5Connect(t.Context(), fakeSOCKS(t, 0), "10.20.0.10:5201"); err != nil {
		t.Fatalf("connect: %v", err)
	}
	err := socks5Connect(t.Context(), fakeSOCKS(t, 2), "10.20.0.10:5201")
	if err == nil || !strings.Contains(err.Error(), "reply code 2") {
		t.Fatalf("refused connect: err = %v, want reply code 2", err)
	}
	if err := socks5Connect(t.Context(), nil, "ehr.hosp.internal:80"); err == nil {
		t.Fatal("a name instead of an address was accepted")
	}
}
