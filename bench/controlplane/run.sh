#!/usr/bin/env bash
# Control-plane load harness (issue 11, item 5): builds the real
# cordon-controller from this tree and runs the harness against it, one
# controller process per agent count, all on loopback. See README.md here
# and controller/internal/loadtest/doc.go.
#
# Usage: bench/controlplane/run.sh [harness flags]
#   e.g. bench/controlplane/run.sh -n 1000,3000,10000 -repeat 3
# Defaults: -n 1000,3000, 500 apps, the change script
# add-member,remove-member,grant-all,revoke-all three times, 30 s idle.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "build: cordon-controller and the harness (-tags loadtest)"
(cd "$root" && go build -o "$work/cordon-controller" ./controller/cmd/cordon-controller)
(cd "$root" && go build -tags loadtest -o "$work/loadtest" ./controller/internal/loadtest)

echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) (other work on the host skews the figures)"
# 10,000 agents on sockets of 64 need ~160 descriptors; the controller
# needs few. Raise the soft limit anyway for larger runs.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
"$work/loadtest" -controller "$work/cordon-controller" "$@"
