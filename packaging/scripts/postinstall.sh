#!/bin/sh
# Cordon package: after install or upgrade. Creates the cordon system user
# and Cordon's directories; enables and starts nothing (see
# docs/operations.md: systemctl enable --now cordon-controller, ...).
# deb calls it with "configure", rpm with the package count. DPKG_ROOT is
# set when dpkg installs into another root (dpkg --root
# --force-script-chrootless): everything then happens inside that root.
set -e
root="${DPKG_ROOT:-}"

if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers --root="${root:-/}" cordon.conf
elif ! getent passwd cordon >/dev/null 2>&1; then
	# No systemd (a minimal container): the same user, made by hand.
	if [ -n "$root" ]; then
		useradd --root "$root" --system --user-group --no-create-home --home-dir / --shell /usr/sbin/nologin cordon
	else
		useradd --system --user-group --no-create-home --home-dir / --shell /usr/sbin/nologin cordon
	fi
fi

if command -v systemd-tmpfiles >/dev/null 2>&1; then
	systemd-tmpfiles --create --root="${root:-/}" cordon.conf
else
	install -d -m 0750 -o root -g cordon "$root/etc/cordon"
	install -d -m 0700 -o cordon -g cordon "$root/var/lib/cordon-controller" "$root/var/lib/cordon-gateway"
fi

if [ -z "$root" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
