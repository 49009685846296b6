//go:build gendocs

package cli

import (
	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/internal/gendocs"
)

func init() {
	rootHooks = append(rootHooks, func(root *cobra.Command) { root.AddCommand(gendocs.CobraCommand(root)) })
}
