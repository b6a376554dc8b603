#!/usr/bin/env bash
# Make sure headless Chromium and its WebDriver are present for the browser tests.
#
# Already installed: nothing to do. Root with apt-get: install Debian's chromium and
# chromium-driver (a failure here fails `make test`, rather than quietly skipping the
# browser tests). Otherwise: say so and carry on; the browser tests skip themselves.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

if [[ -x $CHROMIUM && -x $CHROMEDRIVER ]]; then
    exit 0
fi

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: $CHROMIUM or $CHROMEDRIVER is missing and cannot be installed" \
         "here (needs root and apt-get); browser tests will be skipped." >&2
    exit 0
fi

echo "install-browser: installing chromium and chromium-driver with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q chromium chromium-driver
