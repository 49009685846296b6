package cli

import (
	"net/http"

	"github.com/spf13/cobra"

	"github.com/cordonhq/cordon/pkg/controlproto"
)

// Identity providers (OIDC), as the controller's --oidc-config lists them.

func (a *app) idpCmd() *cobra.Command {
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the identity providers users can sign in with (cordon login --idp NAME)",
		Example: `  cordonctl idp list
  cordonctl idp list -o json`,
		Args: args(),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			var out controlproto.OIDCProviders
			printed, err := a.do(cmd, http.MethodGet, "/v1/oidc/providers", nil, &out)
			if err != nil || printed {
				return err
			}
			t := newTable(a.io.Out, "NAME", "DISPLAY NAME", "ISSUER", "CLIENT ID", "DEVICE FLOW")
			for _, p := range out.Providers {
				df := "no"
				if p.DeviceFlow {
					df = "yes"
				}
				t.row(p.Name, p.DisplayName, p.Issuer, p.ClientID, df)
			}
			return t.flush()
		}),
	}
	return a.group("idp", "OIDC identity providers (configured on the controller with --oidc-config)", list)
}
