package client

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// AppState is one app of the applied map with the reach classifier's
// verdict for it now (tunnel.Explain): what the status page shows per app.
type AppState struct {
	App     controlproto.App `json:"app"`
	Gateway string           `json:"gateway"`
	// Reason is the verdict's reach.Reason in words ("ok",
	// "gateway-unreachable", ...); Detail and Next are its message and
	// next step for the user.
	Reason string `json:"reason"`
	Detail string `json:"detail"`
	Next   string `json:"next,omitempty"`
}

// appStates classifies every app of the applied map (none before the
// first map).
func (t *tunnel) appStates() []AppState {
	cm := t.applied()
	if cm == nil {
		return nil
	}
	var out []AppState
	for _, g := range cm.Gateways {
		for _, a := range g.Apps {
			host := a.DNSName
			if host == "" {
				host = a.Addr.Addr().String()
			}
			v := t.Explain(host, nil)
			out = append(out, AppState{App: a, Gateway: g.GatewayID, Reason: v.Reason.String(), Detail: v.Detail, Next: v.Next})
		}
	}
	return out
}

// maxAppsAnswer bounds the running tunnel's answer to GetApps.
const maxAppsAnswer = 16 << 20

// GetApps asks the running tunnel for its apps and why each is or is not
// reachable now.
func GetApps(dir string) ([]AppState, error) {
	resp, err := localClient(dir).Get("http://cordon/apps")
	if err != nil {
		return nil, ErrNotUp
	}
	defer resp.Body.Close()
	var out []AppState
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAppsAnswer)).Decode(&out); err != nil {
		return nil, fmt.Errorf("read the tunnel's apps (is 'cordon up' of the same version running?): %w", err)
	}
	return out, nil
}

// serveApps answers GetApps on the local socket (local.go).
func (t *tunnel) serveApps(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(t.appStates())
}
