//go:build tools

// Package bindcheck holds the gomobile tools that mobile/bindcheck/run.sh
// runs, in a module of its own so that golang.org/x/mobile stays out of
// the product's go.mod.
package bindcheck

import (
	_ "github.com/cordonhq/cordon/client/core"
	_ "golang.org/x/mobile/bind"
	_ "golang.org/x/mobile/cmd/gobind"
)
