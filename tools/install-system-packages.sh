#!/usr/bin/env bash
# Make sure the Debian packages the tests use are present:
#   chromium, chromium-driver  headless browser checks of the built book
#   bubblewrap                 the grading sandbox's private file system and namespaces
#   postgresql                 the shared-gradebook test of sharded autograding
#
# Already installed: nothing to do. Root with apt-get: install what is missing (a failure
# here fails `make test`, rather than quietly skipping tests). Otherwise: say so and carry
# on; the tests that need a missing package skip themselves with a reason.
set -euo pipefail

declare -A NEEDED=(
    [chromium]=/usr/bin/chromium
    [chromium-driver]=/usr/bin/chromedriver
    [bubblewrap]=/usr/bin/bwrap
    [postgresql]=/usr/lib/postgresql
)
missing=()
for package in "${!NEEDED[@]}"; do
    [[ -e ${NEEDED[$package]} ]] || missing+=("$package")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-packages: missing ${missing[*]}, which cannot be installed here" \
         "(needs root and apt-get); the tests that need them will be skipped." >&2
    exit 0
fi

echo "install-system-packages: installing ${missing[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
