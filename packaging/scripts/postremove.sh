#!/bin/sh
# Cordon package: after removal. The state directories (the controller's
# database and audit log, the gateway's keys) and the cordon user stay,
# even on purge: audit records are kept for years (45 CFR 164.316) and are
# deleted only by an operator, on purpose.
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
