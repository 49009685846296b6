// Command cordon-image builds Cordon's container image as an OCI image
// layout, with no container engine (see package image):
//
//	go run ./cmd/cordon-image -repo ../.. -version v1.2.3 -out /tmp/cordon-oci
//
// The layout loads into an engine as it is, e.g.
// `skopeo copy oci:/tmp/cordon-oci docker-daemon:cordon:v1.2.3` or
// `podman run oci:/tmp/cordon-oci`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/cordonhq/cordon/deploy/check/image"
)

func main() {
	repo := flag.String("repo", "../..", "the Cordon repository (its go.mod's directory)")
	version := flag.String("version", "dev", "the version stamped in the binaries and the image's label")
	out := flag.String("out", "", "directory to write the OCI image layout to (must not exist)")
	caCerts := flag.String("ca-certs", "/etc/ssl/certs/ca-certificates.crt", "CA bundle to put in the image")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "cordon-image: -out DIR is required and no arguments are taken (see -help)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	img, err := image.Build(ctx, *repo, *version, *caCerts, *out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cordon-image: %v\n", err)
		os.Exit(1)
	}
	d, err := img.Digest()
	if err != nil {
		fmt.Fprintf(os.Stderr, "cordon-image: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s (%s, version %s)\n", *out, d, *version)
}
