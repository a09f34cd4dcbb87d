#!/usr/bin/env bash
# Install Debian's nginx-light (nginx with the WebDAV module) for the remote-cache tests and
# benchmark, and openssl (the TLS test makes a self-signed certificate). Idempotent and
# non-interactive: does nothing when both are already there.
set -euo pipefail

packages=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || packages+=(nginx-light)
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
if [ ${#packages[@]} -eq 0 ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-nginx.sh: nginx is missing and this is not root (no sudo); install nginx-light" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# The tests start their own nginx; keep the package from starting the system one on port 80
# (Docker's policy-rc.d trick), unless the machine already has a policy of its own.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod +x "$POLICY"
    trap '$SUDO rm -f "$POLICY"' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || {
    echo "install-nginx.sh: nginx-light installed but no nginx binary found" >&2
    exit 1
}
