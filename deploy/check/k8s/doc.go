// Package k8s checks the Kubernetes manifests in deploy/k8s by decoding
// every document strictly into client-go's typed API objects (an unknown
// field, a duplicate field or a wrong type fails) and then checking what
// Cordon needs of them: the controller a StatefulSet on a volume with
// probes on its health endpoints, the gateway with NET_ADMIN, the TUN
// device and forwarding, both as the image's non-root user.
package k8s
