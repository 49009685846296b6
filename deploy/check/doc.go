// Package check holds the checks of Cordon's deployment artefacts that
// need more than the main module's dependencies: the container image's
// file system (package image, built without a container engine), the
// compose file (compose-go) and the Kubernetes manifests (client-go's
// strict decoding). It is a module of its own so that none of this reaches
// the product binaries' go.mod. Run it with `make deploy-check`.
package check
