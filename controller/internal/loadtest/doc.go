//go:build loadtest

// Command loadtest is the control-plane load harness (issue 11, item 5): a
// real cordon-controller process, N simulated agents over real QUIC with
// real certificates, and scripted admin changes, measured from outside the
// controller. It is behind the loadtest build tag, so the unit suite, `go
// build ./...` and `go vet ./...` never see it; bench/controlplane/run.sh
// builds the controller and runs it.
//
// It lives under controller/internal so it may seed a data directory
// through the controller's own store and CA packages: creating 10,000
// devices through the API would cost an argon2id hash per user and a
// sign-in per device, and a TOTP code works once per user. Everything after
// seeding goes through the controller's public surfaces only: agents speak
// the control protocol (pkg/controlproto) over QUIC with certificates the
// controller's CA signed, and changes go through the admin API
// (pkg/adminapi) with the bootstrap owner token the controller writes. So
// the harness measures the controller core before and after a refactor
// without depending on its insides beyond the store schema and CA files.
//
// The world, per N (all on loopback):
//
//	  harness process                                 controller process
//	+--------------------------------------+       +------------------------+
//	| seed: store (sqlite) + CA files -----+-----> | data dir (on disk)     |
//	| 1 gateway agent  ---- QUIC (mTLS) ---+-----> | control (UDP port P)   |
//	| N client agents  ---- QUIC (mTLS) ---+-----> |                        |
//	|   (on UDP sockets of 64 agents each) |       |                        |
//	| admin changes    ---- HTTPS ---------+-----> | admin API (TCP port P) |
//	| /proc/PID sampler (CPU, RSS) <-------+------ |                        |
//	+--------------------------------------+       +------------------------+
//
// Scenario: one segment "ward" served by one gateway; A apps (default 500):
// C common apps granted to group "all" (every user), D departments with
// their own apps granted to group "deptNN", and S spare apps nobody is
// granted at start. N users with one device each, every device with an
// active session; user i is in "all" and in department i mod D.
//
// Phases, each bounded by a deadline (a phase that does not finish is
// reported as "> deadline" and the run moves on, so a run always ends):
//
//  1. Seed, start the controller, connect the gateway and wait for its map.
//  2. Connect storm: all N clients dial at once, as a fleet does when its
//     controller restarts, and reconnect with the real agents' backoff
//     (-dial-concurrency paces them instead, to tell the controller's own
//     cost from a herd's); the figure is the time until every client has
//     received a map.
//  3. Changes (-changes, repeated -repeat times), each one admin API call:
//     add-member / remove-member (one user joins or leaves a department:
//     affects that user's device and the gateway), grant-all / revoke-all
//     (a rule gives group "all" a spare app, or is deleted: affects every
//     device and the gateway). Latency runs from the API call returning
//     (the commit) to each affected agent receiving, and acknowledging, a
//     map that shows the change (checked on the map's content, not on its
//     arrival, so an unrelated push does not count). Bytes are the
//     control-frame bytes all agents received until the controller fell
//     quiet; controller CPU is measured over the same window.
//  4. Idle: CPU over -idle with every agent connected, and RSS.
package main
