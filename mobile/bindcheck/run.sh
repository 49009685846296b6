#!/usr/bin/env bash
# Generates the Java and Objective-C bindings of the client core
# (client/core) with gobind, as a mobile shell's build would, and fails
# when gobind fails or skips part of the exported API. It needs no Android
# SDK or Xcode: gobind only writes source. golang.org/x/mobile comes
# through the module proxy into this module, never the product's go.mod.
set -euo pipefail
cd "$(dirname "$0")"
GO=${GO:-go}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$GO" build -o "$work/gobind" golang.org/x/mobile/cmd/gobind
# gobind looks its helper package up with go/packages from the directory
# it runs in: this module, which requires golang.org/x/mobile/bind.
"$work/gobind" -lang=java,objc -outdir "$work/out" github.com/cordonhq/cordon/client/core
# gobind leaves out what it cannot bind, with a comment, and exits 0.
if grep -rniE 'skipped|unsupported' "$work/out"; then
	echo "bindcheck: gobind skipped part of client/core's API (above): keep it to bindable types (see client/core/bindable_test.go)" >&2
	exit 1
fi
for f in java/core/Client.java java/core/Events.java java/core/LogSink.java java/core/URLOpener.java src/gobind/Core.objc.h; do
	if [ ! -s "$work/out/$f" ]; then
		echo "bindcheck: gobind wrote no $f" >&2
		exit 1
	fi
done
for m in startTUN signIn signInOIDC setPosture status; do
	grep -q "native .* $m(" "$work/out/java/core/Client.java" || { echo "bindcheck: Client.$m missing from the Java binding" >&2; exit 1; }
done
echo "bindcheck: gobind generated Java and Objective-C bindings for client/core"
