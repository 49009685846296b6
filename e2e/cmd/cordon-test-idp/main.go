// Command cordon-test-idp runs the test OpenID Connect provider
// (internal/oidctest, built on zitadel/oidc's op package) as a process, for
// the e2e suite, and plays the user's browser against it.
//
//	cordon-test-idp serve --addr 192.0.2.1:9998 --users users.json
//	cordon-test-idp browse --user drsmith --password PW URL
//
// Testing only: it serves plain HTTP, keeps everything in memory and has
// an unauthenticated control endpoint.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cordonhq/cordon/internal/oidctest"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: cordon-test-idp serve|browse ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "browse":
		err = browse(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cordon-test-idp: %v\n", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:9998", "listen address (the issuer is http://ADDR/)")
	users := fs.String("users", "", "JSON file: a list of {ID, Username, Password, Email, Groups, MFA}")
	clientID := fs.String("client-id", "cordon", "the one client's ID (a public client)")
	revoked := fs.String("revoked-answer", "", "answer refreshes of deactivated users as this IdP does: dex, okta, entra, auth0, keycloak, google, invalid-client (default: invalid_grant)")
	fs.Parse(args)
	opts := oidctest.Options{Addr: *addr, ClientID: *clientID, DevicePoll: time.Second, Control: true}
	if *revoked != "" {
		a, ok := oidctest.RevokedAnswers[*revoked]
		if !ok {
			return fmt.Errorf("--revoked-answer %q: not one of dex, okta, entra, auth0, keycloak, google, invalid-client", *revoked)
		}
		opts.RevokedAnswer = &a
	}
	var us []oidctest.User
	if *users != "" {
		b, err := os.ReadFile(*users)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(b, &us); err != nil {
			return fmt.Errorf("%s: %w", *users, err)
		}
	}
	idp, err := oidctest.Start(opts)
	if err != nil {
		return err
	}
	defer idp.Close()
	for _, u := range us {
		idp.AddUser(u)
	}
	fmt.Printf("test IdP serving, issuer %s, %d users\n", idp.Issuer, len(us))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}

func browse(args []string) error {
	fs := flag.NewFlagSet("browse", flag.ExitOnError)
	user := fs.String("user", "", "user name at the IdP")
	password := fs.String("password", "", "password at the IdP")
	fs.Parse(args)
	if fs.NArg() != 1 {
		return fmt.Errorf("browse: want one URL, got %d arguments", fs.NArg())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return oidctest.Browser(*user, *password)(ctx, fs.Arg(0))
}
