module github.com/cordonhq/cordon/bench/dataplane

go 1.26.0

// The plain wireguard-go is built with the same module versions as the
// product's go.mod, so that the comparison is of Cordon, not of versions.
require (
	golang.org/x/crypto v0.59.0 // indirect
	golang.org/x/net v0.63.0 // indirect
	golang.org/x/sys v0.50.0
	golang.zx2c4.com/wireguard v0.0.0-20260522210424-ecfc5a8d5446 // indirect
)

require (
	github.com/google/btree v1.1.3 // indirect
	golang.zx2c4.com/wintun v0.0.0-20230126152724-0fa3db229ce2 // indirect
)

tool golang.zx2c4.com/wireguard
