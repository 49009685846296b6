#!/usr/bin/env bash
# Data-plane benchmark: upstream wireguard-go vs the Cordon client and
# gateway (tun mode, userspace mode, the TCP/443 path), side by side in one
# run, in Linux network namespaces. See main.go and world.go for what is
# measured and the picture. Needs root, iproute2, wireguard-tools (wg) and
# nftables.
#
# Usage: sudo bench/dataplane/run.sh [dpbench flags], e.g.
#   bench/dataplane/run.sh -rounds 6 -dur 5s
#   bench/dataplane/run.sh -variants plain,tun -tests tcp1-up,rr
#   bench/dataplane/run.sh -variants tun -tests tcp4-up -rounds 20 -hold   # perf record -p PID, then kill -USR1
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root for network namespaces" >&2; exit 1; }
for t in ip wg nft; do
  command -v "$t" >/dev/null || { echo "run.sh: needs $t (iproute2, wireguard-tools, nftables)" >&2; exit 1; }
done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "build: cordon binaries (product module); wireguard-go and dpbench (bench module)" >&2
(cd "$root" && go build -o "$work/" ./controller/cmd/cordon-controller ./gateway/cmd/cordon-gateway ./client/cmd/cordon ./cordonctl/cmd/cordonctl)
(cd "$here" && go build -o "$work/wireguard-go" golang.zx2c4.com/wireguard && go build -o "$work/dpbench" .)
echo "host: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(go version | cut -d' ' -f3)" >&2
"$work/dpbench" -bin "$work" -wireguard-go "$work/wireguard-go" "$@"
