# Cordon: make build | make demo | make test
GO       ?= go
BIN      ?= bin
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/cordonhq/cordon/internal/buildinfo.version=$(VERSION)
BINARIES := cordon-controller cordon-gateway cordon cordonctl
PKGS     := ./controller/cmd/cordon-controller ./gateway/cmd/cordon-gateway ./client/cmd/cordon ./cordonctl/cmd/cordonctl

.PHONY: all build demo test unit e2e vet fmt-check clean packages pkgtest bindcheck

all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ $(PKGS)
	$(GO) build -o $(BIN)/cordon-demo ./e2e/cmd/cordon-demo

# The whole system on this machine, no root: controller, gateway, client and
# two sample apps. Exits 0 only if every step behaved as expected.
demo: build
	$(BIN)/cordon-demo -bin $(BIN)

# Unit tests (with the race detector) and the end-to-end suite in network
# namespaces (needs root and iproute2; skips loudly otherwise).
test: vet fmt-check unit pkgtest deploy-check bindcheck e2e

# .deb and .rpm packages in dist/ (nfpm, driven from packaging/, a module
# of its own so that nfpm stays out of the product's dependencies).
packages: build
	cd packaging && $(GO) run ./cmd/cordon-pkg -repo .. -version $(VERSION) -bin $(abspath $(BIN)) -out $(abspath dist)

# Builds the packages, installs the .deb with dpkg into a clean root, checks
# what lands and runs systemd-analyze verify on the units (root; ~1 min).
pkgtest:
	cd packaging && $(GO) test -count=1 ./...

# The client core's Java and Objective-C bindings, generated with gobind
# (mobile/bindcheck, a module of its own so golang.org/x/mobile stays out
# of go.mod): fails when part of client/core's API cannot be bound.
bindcheck:
	cd mobile/bindcheck && GO=$(GO) ./run.sh

# The load harness builds only with -tags loadtest (it seeds the store
# directly); vet and run its small test here so it cannot rot.
vet:
	$(GO) vet ./...
	$(GO) vet -tags loadtest ./controller/internal/loadtest/
	$(GO) vet -tags gendocs ./internal/gendocs/ ./internal/daemonflags/ ./cordonctl/internal/cli/ ./client/cmd/cordon/
	cd packaging && $(GO) vet ./...
	@# The benchmark modules (their own go.mod each, so OPA, CoreDNS and
	@# upstream wireguard-go stay out of the product's): vet compiles them
	@# and their tests, so they cannot rot unseen.
	for d in bench/dns bench/policy bench/dataplane; do (cd $$d && $(GO) vet ./...) || exit 1; done

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /e2e)
	$(GO) test -count=1 -tags loadtest ./controller/internal/loadtest/

e2e:
	CORDON_E2E=1 $(GO) test -count=1 -timeout 15m -v ./e2e/...

clean:
	rm -rf $(BIN) dist

# Deployment artefacts, checked in deploy/check (a module of its own, so
# compose-go, client-go and go-containerregistry stay out of go.mod): the
# container image built without an engine, unpacked and run as its
# non-root user (and in podman where installed), the compose file, the
# Kubernetes manifests.
.PHONY: deploy-check image-layout image
deploy-check:
	cd deploy/check && $(GO) vet ./... && $(GO) test -count=1 -timeout 15m ./...

# The image as an OCI layout with no engine: make image-layout IMAGE_OUT=/tmp/cordon-oci
IMAGE_OUT ?= bin/cordon-oci
image-layout:
	cd deploy/check && $(GO) run ./cmd/cordon-image -repo $(CURDIR) -version $(VERSION) -out $(abspath $(IMAGE_OUT))

# The image with an engine, from the Dockerfile (the source of truth).
image:
	docker build --build-arg VERSION=$(VERSION) -t cordon:$(VERSION) .
