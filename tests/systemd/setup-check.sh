#!/usr/bin/env bash
# Proves that scripts/setup sets up the tests on a fresh machine: runs it as root in a
# throwaway copy of a minimal Debian bookworm (no Python, no PostgreSQL; see
# rootfs.sh), in systemd-nspawn, then checks that the venv imports aiosmtpd and
# jsonschema and that PostgreSQL's initdb is there. The Rust toolchain is not needed
# for that part, so the container has none.
#
# Run as root: tests/systemd/setup-check.sh   (.ci/run runs it when it is root)
set -euo pipefail
cd "$(dirname "$0")/../.."
say() { printf 'setup-check: %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { say "must run as root"; exit 1; }
started=$(date +%s)

. tests/systemd/rootfs.sh
base=$(bookworm_rootfs)
work=$(mktemp -d /tmp/cronmail-setup-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -a "$base" "$work/root"
mkdir -p "$work/root/src/scripts" "$work/root/src/tests"
cp scripts/setup "$work/root/src/scripts/"
cp tests/requirements.txt "$work/root/src/tests/"

# Fresh means fresh: the copy has neither Python nor PostgreSQL.
[ ! -e "$work/root/usr/bin/python3" ] || { say "the base root already has python3"; exit 1; }

# The container is fresh, the network is the host's: lend it the host's trust store
# (a site may reach PyPI through a TLS-inspecting proxy with its own CA) and proxy
# settings, and nothing else.
net=()
host_ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
if [ -f "$host_ca" ]; then
  net+=(--bind-ro="$host_ca":/etc/ssl/host-ca.pem --setenv=PIP_CERT=/etc/ssl/host-ca.pem)
fi
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL http_proxy https_proxy HTTP_PROXY HTTPS_PROXY no_proxy NO_PROXY; do
  [ -n "${!var:-}" ] && net+=(--setenv="$var=${!var}")
done

systemd-nspawn --quiet --register=no --keep-unit --machine=cronmail-setup-check \
  --resolv-conf=copy-host -D "$work/root" \
  "${net[@]}" --chdir=/src /bin/bash -c '
    set -euo pipefail
    out=$(scripts/setup)
    printf "%s\n" "$out"
    eval "$(printf "%s\n" "$out" | sed "s/^/export /")"
    "$CRONMAIL_TEST_PYTHON" -c "import aiosmtpd, jsonschema, dateutil, icalendar, prometheus_client; print(\"venv: aiosmtpd\", aiosmtpd.__version__, \"dateutil\", dateutil.__version__, \"icalendar\", icalendar.__version__, \"jsonschema and prometheus_client ok\")"
    "$CRONMAIL_TEST_PG_BIN/initdb" --version
    test -x "$CRONMAIL_TEST_CHROMIUM" && echo "chromium: $CRONMAIL_TEST_CHROMIUM"
    # Run again: nothing to do, nothing reinstalled.
    scripts/setup >/dev/null 2>"/tmp/again.log"
    if [ -s /tmp/again.log ]; then echo "a second run did work: $(cat /tmp/again.log)" >&2; exit 1; fi
  ' || { say "FAIL: scripts/setup on a fresh bookworm"; exit 1; }
say "PASS: scripts/setup on a fresh bookworm ($(( $(date +%s) - started )) s)"
