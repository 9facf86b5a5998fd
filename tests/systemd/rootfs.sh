# Sourced by the nspawn tests: `bookworm_rootfs` prints the path of a cached minimal
# Debian bookworm root with systemd (debootstrap, in $CRONMAIL_E2E_CACHE, default
# /var/cache/cronmail-e2e), making it the first time; it installs the host tools it
# needs (systemd-container, debootstrap, openssl). Root only.
bookworm_rootfs() {
  local need=()
  command -v systemd-nspawn >/dev/null || need+=(systemd-container)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v openssl >/dev/null || need+=(openssl)
  if [ ${#need[@]} -gt 0 ]; then
    echo "rootfs: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  local cache=${CRONMAIL_E2E_CACHE:-/var/cache/cronmail-e2e}
  # procps: /bin/kill, which the unit's ExecReload= runs (the package depends on it).
  local include=systemd,systemd-sysv,dbus,procps
  local base=$cache/bookworm-$(printf %s "$include" | md5sum | cut -c1-8)
  if [ ! -f "$base/.complete" ]; then
    echo "rootfs: debootstrapping bookworm into $base (cached for later runs)" >&2
    rm -rf "$base"
    mkdir -p "$cache"
    local mirror
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
    debootstrap --variant=minbase --include="$include" bookworm "$base" "${mirror:-http://deb.debian.org/debian}" >/dev/null
    touch "$base/.complete"
  fi
  printf '%s\n' "$base"
}
