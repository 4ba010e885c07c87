#!/usr/bin/env bash
# Install the Debian packages the test suite drives for real (a clean CI
# machine has none of them). Idempotent: installs only what is missing.
# Needs root; without it, says what is missing and leaves the tests to skip
# (outside CI) or fail (CI=true).
set -euo pipefail

# command -> Debian package
declare -A want=(
    [chromium]=chromium
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
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
