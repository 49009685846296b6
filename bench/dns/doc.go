// Package dns (module github.com/cordonhq/cordon/bench/dns) benchmarks the
// gateway's split-horizon DNS server against CoreDNS serving the same names
// from a static zone file. It is its own module so that CoreDNS and its
// dependencies never enter the product's go.mod. Run ./run.sh; the figures
// go into docs/benchmarks.md.
package dns
