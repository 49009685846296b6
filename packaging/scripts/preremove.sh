#!/bin/sh
# Cordon package: before removal (deb "remove", rpm 0) stop and disable the
# units; an upgrade (deb "upgrade", rpm 1) leaves them running on the old
# binaries until the operator restarts them.
set -e
case "$1" in
remove | 0)
	if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
		systemctl disable --now cordon-gateway.service cordon-controller.service cordon-client.service >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
