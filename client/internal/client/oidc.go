package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/cordonhq/cordon/pkg/adminapi"
	"github.com/cordonhq/cordon/pkg/agentstate"
	"github.com/cordonhq/cordon/pkg/controlproto"
	"github.com/cordonhq/cordon/pkg/oidcflow"
)

// OIDCLoginConfig configures LoginOIDC.
type OIDCLoginConfig struct {
	StateDir   string
	Controller string
	CACert     string
	IdP        string // the provider's name (cordon login --idp)
	// DeviceCode uses the device authorization grant: the user confirms
	// a code on another device (headless machines).
	DeviceCode bool
	// Browser opens the sign-in URL. Nil: the command in $BROWSER, else
	// xdg-open, best effort (the URL is always printed too).
	Browser func(ctx context.Context, url string) error
	// Out receives what the user must read (the URL, the device code).
	Out io.Writer
	// Handback, if set, carries the redirect URLs a shell's browser
	// session caught itself (oidcflow.Config.Handback).
	Handback <-chan string
	// Answer, if set, receives the controller's answer to the sign-in
	// (which apps need a second factor the sign-in did not prove).
	Answer func(*controlproto.EnrollResponse)
}

// LoginOIDC signs the user in through an identity provider and enrolls
// (or re-enrolls) this device. The controller talks to the provider; this
// side only opens the browser and catches the redirect on a loopback port
// (RFC 8252), holding the PKCE verifier (RFC 7636) that makes the code
// useless to anyone else, or shows a device code (RFC 8628).
func LoginOIDC(ctx context.Context, cfg OIDCLoginConfig) (*agentstate.Enrollment, error) {
	if last, _, err := agentstate.Recall(cfg.StateDir); err == nil && cfg.Controller == "" {
		cfg.Controller = last.Controller // as Login
	}
	if cfg.Controller == "" {
		return nil, errors.New("no controller given: pass --controller https://HOST:PORT")
	}
	if cfg.IdP == "" {
		return nil, errors.New("no identity provider given: pass --idp NAME")
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	return signIn(cfg.Controller, cfg.CACert, cfg.StateDir, "cordon-device",
		func(old agentstate.Enrollment) bool { return old.Controller == cfg.Controller }, // this device, whoever signed in on it last
		func(api *adminapi.Client, dev controlproto.DeviceEnroll) (*controlproto.EnrollResponse, error) {
			var resp *controlproto.EnrollResponse
			var err error
			if cfg.DeviceCode {
				resp, err = deviceLogin(ctx, api, cfg, dev)
			} else {
				resp, err = codeLogin(ctx, api, cfg, dev)
			}
			if err != nil {
				return nil, fmt.Errorf("sign in with %s: %w", cfg.IdP, err)
			}
			if cfg.Answer != nil {
				cfg.Answer(resp)
			}
			return resp, nil
		})
}

// flow is the user-side part of the sign-in, shared with cordonctl.
func (cfg OIDCLoginConfig) flow() oidcflow.Config {
	return oidcflow.Config{IdP: cfg.IdP, Browser: cfg.Browser, Out: cfg.Out, Again: "cordon login", Handback: cfg.Handback}
}

// codeLogin runs the authorization code flow with PKCE and a loopback
// redirect.
func codeLogin(ctx context.Context, api *adminapi.Client, cfg OIDCLoginConfig, dev controlproto.DeviceEnroll) (*controlproto.EnrollResponse, error) {
	var out controlproto.EnrollResponse
	err := oidcflow.Code(ctx, oidcflow.WithRedirect(ctx, api, cfg.flow()),
		func(ctx context.Context, redirect, challenge string) (controlproto.OIDCStartResponse, error) {
			var start controlproto.OIDCStartResponse
			err := api.Do(ctx, http.MethodPost, "/v1/login/oidc/start", controlproto.OIDCStartRequest{
				IdP: cfg.IdP, RedirectURI: redirect, CodeChallenge: challenge,
			}, &start)
			return start, err
		},
		func(ctx context.Context, loginID, code, verifier string) error {
			return api.Do(ctx, http.MethodPost, "/v1/login/oidc", controlproto.OIDCLoginRequest{
				LoginID: loginID, Code: code, CodeVerifier: verifier, DeviceEnroll: dev,
			}, &out)
		})
	return &out, err
}

// deviceLogin runs the device authorization grant.
func deviceLogin(ctx context.Context, api *adminapi.Client, cfg OIDCLoginConfig, dev controlproto.DeviceEnroll) (*controlproto.EnrollResponse, error) {
	var out controlproto.EnrollResponse
	err := oidcflow.Device(ctx, cfg.flow(),
		func(ctx context.Context) (controlproto.OIDCDeviceResponse, error) {
			var ds controlproto.OIDCDeviceResponse
			err := api.Do(ctx, http.MethodPost, "/v1/login/oidc/device", controlproto.OIDCDeviceRequest{IdP: cfg.IdP}, &ds)
			return ds, err
		},
		func(ctx context.Context, loginID string) error {
			return api.Do(ctx, http.MethodPost, "/v1/login/oidc", controlproto.OIDCLoginRequest{LoginID: loginID, DeviceEnroll: dev}, &out)
		})
	return &out, err
}

// OIDCProviders lists the identity providers the controller offers.
func OIDCProviders(ctx context.Context, stateDir, controller, caCert string) ([]controlproto.OIDCProvider, error) {
	if last, _, err := agentstate.Recall(stateDir); err == nil && controller == "" {
		controller = last.Controller
	}
	if controller == "" {
		return nil, errors.New("no controller given: pass --controller https://HOST:PORT")
	}
	caPEM, err := controllerCA(stateDir, controller, caCert)
	if err != nil {
		return nil, err
	}
	api, err := adminapi.New(controller, "", caPEM)
	if err != nil {
		return nil, err
	}
	defer api.Close()
	var out controlproto.OIDCProviders
	if err := api.Do(ctx, http.MethodGet, "/v1/oidc/providers", nil, &out); err != nil {
		return nil, err
	}
	return out.Providers, nil
}
