// Package enroll is what gateway and client agents share to join the
// controller: read the pinned CA, make keys locally, send only public halves
// and save what comes back.
package enroll

import (
	"fmt"
	"net"
	"net/url"
	"os"

	"github.com/cordonhq/cordon/pkg/agentstate"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// ReadCA reads the controller CA certificate an admin handed out.
func ReadCA(path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("no controller CA given: pass --ca-cert with the controller's ca.pem (it is in the controller's data dir)")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read controller CA: %w", err)
	}
	return b, nil
}

// ControlAddr returns the QUIC control address: the one the controller
// named, else the API URL's host and port (the controller serves QUIC on the
// UDP port with the same number).
func ControlAddr(apiURL string, resp *controlproto.EnrollResponse) (string, error) {
	if resp != nil && resp.ControlAddr != "" {
		return resp.ControlAddr, nil
	}
	u, err := url.Parse(apiURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("controller URL %q: want https://host:port", apiURL)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

// Save stores an enrollment response.
func Save(st *agentstate.State, apiURL string, caPEM []byte, resp *controlproto.EnrollResponse) error {
	ctl, err := ControlAddr(apiURL, resp)
	if err != nil {
		return err
	}
	return st.SaveEnrollment(agentstate.Enrollment{
		ID: resp.ID, User: resp.User, OverlayAddr: resp.OverlayAddr,
		Controller: apiURL, ControlAddr: ctl,
	}, []byte(resp.Certificate), caPEM)
}
