#!/usr/bin/env bash
# Split-horizon DNS benchmark: the Cordon gateway's DNS server (filtering
# every answer by the asking device's policy) against CoreDNS serving the
# same names from a static zone file, side by side in one run, on loopback.
#
#   10,000 apps (app00000..app09999.hosp.internal), 100,000 devices in the
#   policy (100 groups of 100 apps each); 2,000 of the devices ask, half
#   the time for an app they may reach, half for one they may not (Cordon
#   answers NXDOMAIN, CoreDNS the address).
#
# CoreDNS is built from the Go module proxy in this module (bench/dns has
# its own go.mod; the product's go.mod never sees it). When taskset is
# available the server runs on CPU 0 and the load generator on CPU 1.
#
# Usage: bench/dns/run.sh [duration, default 10s]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dur="${1:-10s}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

pin_srv=() pin_gen=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  pin_srv=(taskset -c 0) pin_gen=(taskset -c 1)
fi

echo "build: cordon dns benchserver (product module), loadgen and coredns (bench module)"
(cd "$root" && go build -o "$work/benchserver" ./gateway/internal/dns/benchserver)
(cd "$here" && go build -o "$work/loadgen" ./loadgen && go build -o "$work/coredns" github.com/coredns/coredns)

wait_port() { # until the server on $1 answers the zone's SOA
  if ! command -v dig >/dev/null 2>&1; then sleep 2; return 0; fi
  for _ in $(seq 100); do
    dig +time=1 +tries=1 -p "${1##*:}" @"${1%:*}" hosp.internal SOA >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server on $1 did not come up" >&2; exit 1
}

"${pin_srv[@]}" "$work/benchserver" -listen 127.0.0.1:5300 -zone-file "$work/db.hosp.internal" -workload "$work/workload.txt" > "$work/cordon.log" 2>&1 &
cordon=$!
until grep -q ready "$work/cordon.log" 2>/dev/null; do sleep 0.2; done
wait_port 127.0.0.1:5300
echo "cordon:  $(head -1 "$work/cordon.log")"
for w in 64 1; do # throughput at 64 outstanding queries; latency with one
  "${pin_gen[@]}" "$work/loadgen" -server 127.0.0.1:5300 -workload "$work/workload.txt" -duration "$dur" -workers $w -label cordon
done
kill -INT $cordon; wait $cordon || true

cat > "$work/Corefile" <<CF
hosp.internal:5301 {
    bind 127.0.0.1
    file $work/db.hosp.internal
}
CF
"${pin_srv[@]}" "$work/coredns" -conf "$work/Corefile" -quiet > "$work/coredns.log" 2>&1 &
coredns=$!
wait_port 127.0.0.1:5301
echo "coredns: $("$work/coredns" -version | head -1), static zone file, 10000 A records"
for w in 64 1; do # throughput at 64 outstanding queries; latency with one
  "${pin_gen[@]}" "$work/loadgen" -server 127.0.0.1:5301 -workload "$work/workload.txt" -duration "$dur" -workers $w -label coredns
done
kill $coredns; wait $coredns 2>/dev/null || true
