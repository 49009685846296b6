#!/usr/bin/env bash
# Policy benchmarks at hospital-system size (100,000 devices, 10,000 apps,
# 20,000 rules): compile time and memory, then the per-flow decision of
# Cordon's compiled policy and of OPA on the same requests. Figures go to
# docs/benchmarks.md by hand, with the machine they came from.
#
#   bench/policy/run.sh            # hospital size
#   POLICYBENCH_SIZE=small bench/policy/run.sh
set -euo pipefail
cd "$(dirname "$0")"
echo "== machine: $(nproc) CPUs, $(go version)"
grep -m1 'model name' /proc/cpuinfo || true
echo "== Cordon, OPA and the reference evaluator agree"
go test -count=1 -run TestAgreeWithOPA -v . | grep -E 'agree|ok|FAIL'
echo "== compile"
POLICYBENCH_SCALE=1 go test -count=1 -run TestScale -v . | grep -E 'bench_test|ok|FAIL'
echo "== decision per new flow"
go test -count=1 -run '^$' -bench . -benchmem -benchtime 2s .
