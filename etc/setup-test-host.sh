#!/usr/bin/env bash
# Install the Debian packages the test suite drives for real (a clean CI
# machine has none of them). Idempotent: installs only what is missing.
# Needs root; without it, says what is missing and leaves the tests to skip
# (outside CI) or fail (CI=true).
set -euo pipefail

# command -> Debian package
declare -A want=(
    [chromium]=chromium
    # the docker tests run dockerd of their own (tests/docker_engine.py)
    [dockerd]=docker.io
    # the agent image is a debootstrapped Debian (etc/docker/build-agent-image.sh)
    [debootstrap]=debootstrap
    # certificates of the TCP+TLS test engine
    [openssl]=openssl
)

missing=()
for c in "${!want[@]}"; do
    command -v "$c" >/dev/null 2>&1 || missing+=("${want[$c]}")
done
((${#missing[@]})) || exit 0
if [[ $(id -u) != 0 ]]; then
    echo "setup-test-host: not root; missing Debian packages: ${missing[*]}" >&2
    exit 0
fi
echo "setup-test-host: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# no package may start a service (docker.io would start the system's
# dockerd): the tests start what they need, with their own paths
p=/usr/sbin/policy-rc.d
if [[ ! -e $p ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$p"
    chmod 755 "$p"
    trap 'rm -f "$p"' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
