//go:build gendocs

package main

import (
	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/internal/gendocs"
)

func init() {
	rootHooks = append(rootHooks, func(root *cobra.Command) {
		forManPages(root)
		root.AddCommand(gendocs.CobraCommand(root))
	})
}
