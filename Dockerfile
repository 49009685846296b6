# Multi-stage build of all four Cordon binaries: static (CGO off), run as a
# non-root user. The gateway and client in tun mode need CAP_NET_ADMIN and
# /dev/net/tun (docker run --cap-add NET_ADMIN --device /dev/net/tun); the
# userspace modes need neither. A tun-mode gateway container installs its
# host firewall in the container's network namespace and needs forwarding
# there: run it with --sysctl net.ipv4.ip_forward=1 (a container cannot
# always write /proc/sys).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/cordonhq/cordon/internal/buildinfo.version=${VERSION}" -o /out/ \
      ./controller/cmd/cordon-controller ./gateway/cmd/cordon-gateway ./client/cmd/cordon ./cordonctl/cmd/cordonctl

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER nonroot:nonroot
VOLUME ["/var/lib/cordon"]
EXPOSE 8443/tcp 8443/udp 51820/udp
ENTRYPOINT ["/usr/local/bin/cordon-controller", "--data-dir", "/var/lib/cordon/controller"]
