# syntax=docker/dockerfile:1
#
# One image for all of Cordon: the four binaries plus cordon-healthcheck,
# static (CGO off), run as the non-root user nonroot (uid/gid 65532). The
# entrypoint is the controller; run the gateway or client with --entrypoint
# (see docs/operations.md, "Containers"):
#
#   docker build --build-arg VERSION=$(git describe --always) -t cordon .
#   docker run -v cordon-data:/var/lib/cordon -p 8443:8443/tcp -p 8443:8443/udp cordon --hosts ctl.example.org
#
# Gateway in tun mode: run /usr/local/bin/cordon-gateway-tun, a copy of
# cordon-gateway that carries the file capabilities
# cap_net_admin,cap_net_bind_service=ep (a non-root user gets no added
# capability otherwise; NET_BIND_SERVICE, for its DNS server on port 53,
# is in every engine's default set), and give the container only
#   --cap-add NET_ADMIN --device /dev/net/tun --sysctl net.ipv4.ip_forward=1
# (forwarding to the app subnet; a container cannot always write
# /proc/sys). Without those capabilities in the container's bounding set
# that copy does not start at all (EPERM), so it is a separate file:
# userspace mode runs the plain cordon-gateway and needs none of these.
#
# deploy/check builds the same file system without a container engine and
# its tests hold this file and that build to the same users, paths,
# entrypoint, health check and labels: change both together.
FROM golang:1.26-bookworm AS build
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libcap2-bin && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/cordonhq/cordon/internal/buildinfo.version=${VERSION}" -o /out/ \
      ./controller/cmd/cordon-controller ./gateway/cmd/cordon-gateway ./client/cmd/cordon ./cordonctl/cmd/cordonctl ./internal/cmd/cordon-healthcheck
RUN cp /out/cordon-gateway /out/cordon-gateway-tun && setcap cap_net_admin,cap_net_bind_service=ep /out/cordon-gateway-tun
# The data volume's directory, owned by nonroot so that a fresh named
# volume (which Docker fills from the image) is writable by it; and
# /var/run/wireguard, where a tun-mode gateway (wireguard-go) puts its
# UAPI socket for `wg show`.
RUN mkdir -p /data/cordon /run-wg/wireguard && chmod 0700 /data/cordon && chmod 0755 /run-wg/wireguard

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="cordon" \
      org.opencontainers.image.description="Cordon zero-trust network overlay: controller, gateway, client and cordonctl" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/ /usr/local/bin/
COPY --from=build --chown=65532:65532 /data/ /var/lib/
COPY --from=build --chown=65532:65532 /run-wg/ /var/run/
USER 65532:65532
VOLUME ["/var/lib/cordon"]
# 8443: admin API (TCP) and agent control channel (QUIC, UDP); 51820:
# gateway WireGuard; 9101: metrics and health (/metrics, /healthz, /readyz),
# on loopback unless --metrics-listen says otherwise.
EXPOSE 8443/tcp 8443/udp 51820/udp 9101/tcp
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/cordon-healthcheck", "http://127.0.0.1:9101/healthz"]
ENTRYPOINT ["/usr/local/bin/cordon-controller", "--data-dir", "/var/lib/cordon/controller", "--metrics-listen", "127.0.0.1:9101"]
