package controlproto

import "time"

// OIDC sign-in (issue 5). The controller is the OIDC client: the device
// opens the browser and receives the authorization code on a loopback
// redirect, or shows a device code; the controller exchanges the code,
// verifies the ID token and keeps the refresh token. No IdP token reaches
// the device.
//
//	GET  /v1/oidc/providers     → OIDCProviders
//	POST /v1/login/oidc/start   OIDCStartRequest → OIDCStartResponse
//	POST /v1/login/oidc/device  OIDCDeviceRequest → OIDCDeviceResponse
//	POST /v1/login/oidc         OIDCLoginRequest → EnrollResponse
//
// While a device-flow sign-in waits for the user, POST /v1/login/oidc
// answers 400 with error code OIDCPending, or OIDCSlowDown when polled
// faster than the interval; OIDCExpired and OIDCDenied end it.

// Error codes of the OIDC sign-in routes (RFC 8628 names).
const (
	OIDCPending        = "authorization_pending"
	OIDCSlowDown       = "slow_down"
	OIDCExpired        = "expired_token"
	OIDCDenied         = "access_denied"
	OIDCIdPUnavailable = "idp_unavailable" // 502: the IdP did not answer; try again later
	// 502: the controller's configuration of the IdP is wrong (its HTTPS
	// certificate is not trusted: ca_file); retrying will not help.
	OIDCIdPMisconfigured = "idp_misconfigured"
)

// OIDCProvider describes one identity provider users may sign in with.
type OIDCProvider struct {
	Name        string `json:"name"`
	DisplayName string `json:"display_name"`
	Issuer      string `json:"issuer"`
	ClientID    string `json:"client_id"`
	DeviceFlow  bool   `json:"device_flow"`
	// RedirectHost and RedirectPort are the loopback redirect the client
	// listens on, http://HOST:PORT/callback, exactly as registered at the
	// IdP; port 0: any free port. Empty host (older controllers): 127.0.0.1.
	RedirectHost string `json:"redirect_host,omitempty"`
	RedirectPort uint16 `json:"redirect_port,omitempty"`
}

// OIDCProviders answers GET /v1/oidc/providers.
type OIDCProviders struct {
	Providers []OIDCProvider `json:"providers"`
}

// OIDCStartRequest starts an authorization code sign-in with PKCE.
type OIDCStartRequest struct {
	IdP string `json:"idp"`
	// RedirectURI is the device's loopback listener
	// (http://127.0.0.1:PORT/callback).
	RedirectURI string `json:"redirect_uri"`
	// CodeChallenge is the S256 challenge of a PKCE verifier only the
	// device knows (RFC 7636).
	CodeChallenge string `json:"code_challenge"`
}

// OIDCStartResponse says where to send the browser. The redirect carries
// State back; the device must check it before using the code.
type OIDCStartResponse struct {
	LoginID string `json:"login_id"`
	AuthURL string `json:"auth_url"`
	State   string `json:"state"`
}

// OIDCDeviceRequest starts a device authorization grant (RFC 8628).
type OIDCDeviceRequest struct {
	IdP string `json:"idp"`
}

// OIDCDeviceResponse is what to show the user, and how often to poll.
type OIDCDeviceResponse struct {
	LoginID                 string    `json:"login_id"`
	UserCode                string    `json:"user_code"`
	VerificationURI         string    `json:"verification_uri"`
	VerificationURIComplete string    `json:"verification_uri_complete,omitempty"`
	ExpiresAt               time.Time `json:"expires_at"`
	Interval                int       `json:"interval"` // seconds
}

// OIDCLoginRequest finishes a sign-in: with Code and CodeVerifier for the
// authorization code flow, without them to poll a device-flow sign-in.
type OIDCLoginRequest struct {
	LoginID      string `json:"login_id"`
	Code         string `json:"code,omitempty"`
	CodeVerifier string `json:"code_verifier,omitempty"`
	DeviceEnroll
}
