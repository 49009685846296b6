// Package e2e holds Cordon's whole-system tests: the real binaries
// (cordon-controller, cordon-gateway, cordon, cordonctl), built once per test
// binary run, each running in its own Linux network namespace, with the
// gateway and the clients in tun mode (kernel TUN + wireguard-go).
//
// Every test builds its own world (namespaces named ce2e<pid>x<n>-<role>, so
// parallel tests and crashed runs never collide):
//
//	               [wan ns] bridge br0, 192.0.2.0/24 (TEST-NET-1)
//	    .1 |                 .2 |                .11 |             .12 |
//	[ctl ns]               [gw ns]              [cl1 ns]          [cl2 ns]
//	cordon-controller      cordon-gateway       cordon up         cordon up
//	:8443 tcp (API)        wg c<pid>g<n>        user nurse        user clerk
//	:8443 udp (QUIC)       udp :51820           wg c<pid>n<n>     wg c<pid>k<n>
//	                       (tcp :443 with --tcp-listen: tcppath_test.go)
//	                       app0 10.20.0.1/24
//	                            |  (masquerade: apps need no route back)
//	                       [app ns] eth0 10.20.0.0/24
//	                         10.20.0.10:80    ehr        app "ehr" (phi)
//	                         10.20.0.10:8080  ehr-admin  no app, no rule
//	                         10.20.0.11:80    billing    app "billing", no rule
//	                         10.20.0.12:80    lab        no app
//
// Policy: segment "clinical" = 10.20.0.0/24; group "clinicians" = {nurse};
// rule "clinicians-ehr" lets clinicians reach ehr. clerk is in no group.
//
// WireGuard interface names carry the test's pid and world number because
// wireguard-go's UAPI socket (/var/run/wireguard/NAME.sock, which `wg show`
// uses) is shared by all namespaces of the host.
//
// The HTTP apps are Go servers the test starts inside the app namespace; the
// test dials from inside the client namespaces the same way (lock an OS
// thread, setns, create the socket, switch back), so it can hold a TCP
// connection open and watch a policy change cut it.
//
// The tests need root, /dev/net/tun, iproute2 and wireguard-tools. Without
// root or iproute2 they skip, loudly; as root nothing skips. They run only
// when asked (CORDON_E2E=1, which make e2e sets), so that go test ./... as
// root does not start minutes of network namespaces by accident. Run:
//
//	make e2e    # or: CORDON_E2E=1 go test -count=1 -v ./e2e/
//
// E2E_KEEP=1 keeps every world's state and logs in /tmp/ce2e-*;
// E2E_LOG_LEVEL=debug runs every binary with --log-level debug.
package e2e
