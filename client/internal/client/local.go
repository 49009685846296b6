package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cordonhq/cordon/client/internal/reach"
	"github.com/cordonhq/cordon/pkg/controlproto"
)

// SocketName is the local control socket in the state directory, through
// which 'cordon status' and 'cordon down' talk to the running tunnel. It is
// created 0600: only the user who brought the tunnel up can use it.
const SocketName = "cordon.sock"

// Status is what 'cordon status' shows.
type Status struct {
	Mode             string          `json:"mode"`
	Interface        string          `json:"interface"`
	DeviceID         string          `json:"device_id"`
	User             string          `json:"user"`
	OverlayAddr      netip.Addr      `json:"overlay_addr"`
	Controller       string          `json:"controller"`
	ControlConnected bool            `json:"control_connected"`
	SOCKS5           string          `json:"socks5,omitempty"`
	HTTPProxy        string          `json:"http_proxy,omitempty"`
	Gateways         []GatewayStatus `json:"gateways"`
	// LastAppTraffic is when this device last sent a packet to an app
	// (anything but the gateways' overlay addresses) since 'cordon up'
	// started; nil: none yet. The idle limit runs on the controller from
	// what the gateways saw, so this only estimates the idle time left.
	LastAppTraffic *time.Time `json:"last_app_traffic,omitempty"`
	// Segments are the segments of a map of capability 10 or later: each
	// one's gateways in this device's order and the one it uses now.
	Segments []SegmentStatus `json:"segments,omitempty"`
	// Session is the session as the controller last described it; nil
	// before the first map (or from a controller without sessions).
	Session *controlproto.SessionInfo `json:"session,omitempty"`
}

// SegmentStatus is one segment and its gateways.
type SegmentStatus struct {
	Name     string   `json:"name"`
	Gateways []string `json:"gateways"` // in this device's order
	Current  string   `json:"current"`  // the one its routes go through
	Draining []string `json:"draining,omitempty"`
}

// GatewayStatus is one gateway peer.
type GatewayStatus struct {
	ID            string         `json:"id"`
	Endpoint      string         `json:"endpoint"`
	AllowedIPs    []netip.Prefix `json:"allowed_ips"`
	LastHandshake *time.Time     `json:"last_handshake,omitempty"`
	Apps          []AppStatus    `json:"apps"`
	// Path is how WireGuard reaches the gateway now: "udp", or "tcp" (TLS
	// to its TCP endpoint, when UDP gets no answer).
	Path        string `json:"path"`
	TCPEndpoint string `json:"tcp_endpoint,omitempty"` // as the map has it; empty: UDP only
}

// AppStatus is one app of the map with whether it is reachable now.
type AppStatus struct {
	controlproto.App
	// State is reach.Classify's verdict for the app when the status was
	// taken: the same reason and next step the proxy answers with.
	State reach.Verdict `json:"state"`
}

func listenLocal(dir string) (net.Listener, error) {
	path := filepath.Join(dir, SocketName)
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, errors.New("a tunnel is already up for this state directory: run 'cordon down' first")
	}
	os.Remove(path) // stale socket of a crashed run
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

func serveLocal(ctx context.Context, ln net.Listener, t *tunnel, down func()) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(t.status())
	})
	mux.HandleFunc("POST /down", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
		down()
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	srv.Serve(ln)
}

func (t *tunnel) status() Status {
	e := t.st.Enrollment
	s := Status{
		Mode: t.cfg.Mode, Interface: t.cfg.Interface, DeviceID: e.ID, User: e.User,
		OverlayAddr: e.OverlayAddr, Controller: e.Controller, ControlConnected: t.cc.Connected(),
	}
	if t.cfg.Mode == ModeUserspace {
		s.SOCKS5, s.HTTPProxy = t.cfg.SOCKSAddr, t.cfg.HTTPAddr
	}
	if t.fo != nil && t.fo.active != nil {
		if last := t.fo.active.last(); last.UnixNano() > 0 {
			s.LastAppTraffic = &last
		}
	}
	paths := t.paths.current()
	t.mu.Lock()
	cm, raw := t.cm, t.raw // applied maps are never changed, only replaced
	t.mu.Unlock()
	if cm == nil {
		return s
	}
	hs, now := t.handshakes(), time.Now()
	s.Session = cm.Session
	for i := range cm.Gateways {
		g := &cm.Gateways[i]
		gs := GatewayStatus{ID: g.GatewayID, Endpoint: g.Endpoint, AllowedIPs: g.AllowedIPs,
			Path: paths[g.GatewayID].String(), TCPEndpoint: g.TCPEndpoint}
		if h := hs[g.PublicKey.String()]; !h.IsZero() {
			gs.LastHandshake = &h
		}
		v := reach.Classify(t.snapshot(cm, g, hs), now)
		for _, a := range g.Apps {
			gs.Apps = append(gs.Apps, AppStatus{App: a, State: v})
		}
		s.Gateways = append(s.Gateways, gs)
	}
	if raw != nil {
		cur := t.fo.Current()
		for _, sg := range raw.Segments {
			ss := SegmentStatus{Name: sg.Name, Gateways: sg.Gateways, Current: cur[sg.Name]}
			for _, g := range raw.Gateways {
				if g.Draining && slices.Contains(sg.Gateways, g.GatewayID) {
					ss.Draining = append(ss.Draining, g.GatewayID)
				}
			}
			s.Segments = append(s.Segments, ss)
		}
	}
	return s
}

// localClient talks to a running tunnel.
func localClient(dir string) *http.Client {
	path := filepath.Join(dir, SocketName)
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}
}

// ErrNotUp says no tunnel is running for the state directory.
var ErrNotUp = errors.New("the tunnel is not up (start it with 'cordon up')")

// GetStatus asks the running tunnel for its status.
func GetStatus(dir string) (*Status, error) {
	resp, err := localClient(dir).Get("http://cordon/status")
	if err != nil {
		return nil, ErrNotUp
	}
	defer resp.Body.Close()
	var s Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, fmt.Errorf("read status: %w", err)
	}
	return &s, nil
}

// Down asks the running tunnel to stop.
func Down(dir string) error {
	resp, err := localClient(dir).Post("http://cordon/down", "", nil)
	if err != nil {
		return ErrNotUp
	}
	resp.Body.Close()
	return nil
}
