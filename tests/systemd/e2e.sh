#!/usr/bin/env bash
# End-to-end test under a real systemd: boots Debian bookworm in systemd-nspawn,
# installs the built .deb, and drives cronmail.service with systemctl against a real
# SMTP server (aiosmtpd, STARTTLS + AUTH) on the host's loopback.
#
# Run as root: tests/systemd/e2e.sh   (./scripts/test runs it when it is root)
# The rootfs is cached in $CRONMAIL_E2E_CACHE (default /var/cache/cronmail-e2e).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
started=$(date +%s)

say() { printf 'e2e: %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root"

# 1. Tools, and a cached minimal bookworm with systemd (tests/systemd/rootfs.sh).
. tests/systemd/rootfs.sh
base=$(bookworm_rootfs)

# 2. The package.
if [ -z "${CRONMAIL_DEB:-}" ]; then
  ./scripts/package >/dev/null
  CRONMAIL_DEB=$(ls -t target/debian/cronmail_*_amd64.deb | head -n1)
fi
say "package: $CRONMAIL_DEB"

work=$(mktemp -d /tmp/cronmail-e2e.XXXXXX)
nspawn_pid=
smtp_pid=
leader=
cleanup() {
  if [ -n "$nspawn_pid" ]; then
    # Power the container off; if it does not go within 20 s, kill it.
    [ -n "$leader" ] && nsenter -t "$leader" -a -- systemctl poweroff >/dev/null 2>&1 || true
    for _ in $(seq 200); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$nspawn_pid" 2>/dev/null; then
      [ -n "$leader" ] && kill -KILL "$leader" 2>/dev/null
      kill -KILL "$nspawn_pid" 2>/dev/null
    fi
    wait "$nspawn_pid" 2>/dev/null || true
  fi
  [ -n "$smtp_pid" ] && kill "$smtp_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# 3. A real SMTP server on the host's loopback: STARTTLS with a test CA, AUTH.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=cronmail e2e CA" \
  -keyout "$work/ca.key" -out "$work/ca.pem" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$work/key.pem" -out "$work/req.pem" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$work/san.ext"
openssl x509 -req -in "$work/req.pem" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
  -days 2 -extfile "$work/san.ext" -out "$work/cert.pem" 2>/dev/null
python=${CRONMAIL_TEST_PYTHON:-$repo/.venv/bin/python}
[ -x "$python" ] || fail "no Python with aiosmtpd at $python (run ./scripts/test)"
mkdir -p "$work/smtp"
cat > "$work/spec.json" <<EOF
{"mode": "starttls", "cert": "$work/cert.pem", "key": "$work/key.pem",
 "users": {"alice": "e2e-password"}, "out": "$work/smtp",
 "auth_fail_reply": "535-5.7.8 Username and Password not accepted. For more information, go to\r\n535 5.7.8  https://support.google.com/mail/?p=BadCredentials e2e - gsmtp"}
EOF
"$python" tests/it/support/smtpd.py "$work/spec.json" > "$work/smtp.out" &
smtp_pid=$!
for _ in $(seq 100); do grep -q READY "$work/smtp.out" && break; sleep 0.1; done
port=$(sed -n 's/^READY //p' "$work/smtp.out")
[ -n "$port" ] || fail "the SMTP server did not start"
say "SMTP server on 127.0.0.1:$port"

# 4. A fresh copy of the rootfs, the package inside, booted.
root=$work/root
cp -a "$base" "$root"
# A minbase rootfs has no /etc/hosts, so `localhost` would not resolve.
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n' > "$root/etc/hosts"
cp "$CRONMAIL_DEB" "$root/root/cronmail.deb"
cp "$work/ca.pem" "$root/root/ca.pem"
systemd-nspawn --quiet --boot --register=no --keep-unit -D "$root" --machine=cronmail-e2e > "$work/console.log" 2>&1 &
nspawn_pid=$!
for _ in $(seq 200); do
  # The container's init: nspawn's child once it has become systemd.
  leader=$( (ps -o pid=,comm= --ppid "$nspawn_pid" 2>/dev/null || true) | awk '$2 == "systemd" { print $1; exit }')
  [ -n "$leader" ] && break
  sleep 0.1
done
[ -n "$leader" ] || fail "the container did not start: $(cat "$work/console.log")"
ctr() { nsenter -t "$leader" -a -- "$@"; }
for _ in $(seq 300); do ctr test -S /run/systemd/private 2>/dev/null && break; sleep 0.1; done
ctr test -S /run/systemd/private || fail "systemd in the container did not come up"
for _ in $(seq 100); do
  state=$(ctr systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded) break ;; esac
  sleep 0.2
done
say "container booted (leader pid $leader, state $state)"

ctr dpkg -i /root/cronmail.deb >/dev/null
ctr systemd-analyze verify --man=no /usr/lib/systemd/system/cronmail.service || fail "systemd-analyze verify"
ctr systemctl is-enabled cronmail >/dev/null 2>&1 && fail "the package must not enable the service on its own"

# The packaged jobs.toml is valid and starts cleanly with no job.
ctr cronmail --config /etc/cronmail/jobs.toml check >/dev/null || fail "the shipped jobs.toml does not pass check"
# The manual, the schema the packaged jobs.toml points at, and the docs it names.
for f in /usr/share/man/man1/cronmail.1 /usr/share/man/man5/cronmail-jobs.toml.5 \
  /usr/share/doc/cronmail/jobs.toml.md /usr/share/doc/cronmail/oauth2.md; do
  ctr sh -c "test -f $f || test -f $f.gz" || fail "the package does not ship $f"
done
schema=$(ctr sed -n 's|^#:schema file://||p' /etc/cronmail/jobs.toml)
ctr test -s "$schema" || fail "the packaged jobs.toml points at $schema, which is not shipped"
ctr sh -c "cronmail schema | cmp -s - $schema" || fail "$schema differs from \`cronmail schema\`"

# 5. Configure it against the host's server, password by LoadCredential=.
ctr install -m 0644 /root/ca.pem /etc/cronmail/ca.pem
ctr sh -c 'umask 077; printf "e2e-password\n" > /etc/cronmail/smtp-password'
write_jobs() {
  ctr sh -c "cat > /etc/cronmail/jobs.toml" <<EOF
from = "Reminders <bot@example.com>"
timezone = "UTC"
[smtp]
host = "localhost"
port = $port
tls = "starttls"
username = "alice"
password_credential = "smtp-password"
ca_file = "/etc/cronmail/ca.pem"
timeout = "10s"
[delivery]
retry_min = "2s"
retry_max = "4s"
[[job]]
name = "e2e"
schedule = "*/2 * * * * *"
to = ["team@example.com"]
subject = "e2e {{ time }}"
body = "sent by cronmail under systemd"
$1
EOF
}
write_jobs ""
ctr cronmail --config /etc/cronmail/jobs.toml check >/dev/null || fail "cronmail check on the e2e jobs.toml"
ctr systemctl enable --now cronmail >/dev/null 2>&1 || { ctr journalctl -u cronmail --no-pager | tail -20; fail "systemctl enable --now"; }

count() { grep -l "Subject: $1" "$work"/smtp/msg-*.json 2>/dev/null | wc -l; }
received() { [ "$(count "$1")" -ge 1 ]; }
wait_for() { # what, command...
  local what=$1; shift
  for _ in $(seq 150); do "$@" && return 0; sleep 0.2; done
  ctr journalctl -u cronmail --no-pager | tail -30 >&2
  fail "timed out waiting for $what"
}
wait_for "a message from the e2e job" received 'e2e '
wait_for "the journal's success line" sh -c "nsenter -t $leader -a -- journalctl -u cronmail --no-pager -o cat | grep -q '^sent'"
ctr journalctl -u cronmail --no-pager JOB=e2e -o verbose | grep -q 'MESSAGE_ID=e2e\.' || fail "journal fields: JOB= and MESSAGE_ID="
[ "$(ctr systemctl show -p ActiveState --value cronmail)" = active ] || fail "not active after start"
say "delivered; the journal has the success line with JOB= and MESSAGE_ID= fields"

# 6. A reload adds a job, and the service stays active throughout.
write_jobs '[[job]]
name = "added"
schedule = "*/2 * * * * *"
to = ["team@example.com"]
subject = "added {{ time }}"
body = "a job added by a reload"'
ctr systemctl reload cronmail
# `reloading` is systemd's state between the daemon's RELOADING=1 and READY=1, which
# can come after `systemctl reload` returned (ExecReload is a kill -HUP): still up.
for _ in $(seq 20); do
  state=$(ctr systemctl show -p ActiveState --value cronmail)
  case "$state" in
    active | reloading) ;;
    *) fail "left the active state during a reload ($state)" ;;
  esac
  sleep 0.1
done
wait_for "a message from the job added by the reload" received 'added '
[ "$(ctr systemctl show -p ActiveState --value cronmail)" = active ] || fail "not active after the reload"
say "reload: the new job fired, the service stayed active"

# 7. A wrong credential: the journal shows the auth failure and the hint.
ctr sh -c 'umask 077; printf "wrong\n" > /etc/cronmail/smtp-password'
ctr systemctl restart cronmail
wait_for "the auth failure in the journal" sh -c "nsenter -t $leader -a -- journalctl -u cronmail --no-pager -o verbose CLASS=auth | grep -q 'HINT=Gmail no longer accepts the account password'"
say "a wrong password: class auth, with the App Password hint, in the journal"

# 8. A clean stop.
ctr systemctl stop cronmail
result=$(ctr systemctl show -p Result --value cronmail)
status=$(ctr systemctl show -p ExecMainStatus --value cronmail)
[ "$result" = success ] && [ "$status" = 0 ] || fail "stop: Result=$result ExecMainStatus=$status"
say "stopped cleanly (Result=success, status 0)"

say "passed in $(( $(date +%s) - started )) s"
