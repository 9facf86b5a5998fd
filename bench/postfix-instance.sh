#!/usr/bin/env bash
# A private Postfix instance for the benchmark: loopback only, no chroot, its own
# config, queue and SASL database under DIR; the system's mail setup is not touched.
# Accepts mail on 127.0.0.1:PORT with STARTTLS and SASL (PLAIN/LOGIN, user `bench`),
# and discards it after queueing (as a real submission server does, minus delivery).
#
#   bench/postfix-instance.sh start DIR PORT CERT KEY PASSWORD
#   bench/postfix-instance.sh stop DIR
set -euo pipefail
cmd=$1 dir=$2
if [ "$cmd" = stop ]; then
  postfix -c "$dir/conf" stop >/dev/null 2>&1 || true
  exit 0
fi
port=$3 cert=$4 key=$5 password=$6
mkdir -p "$dir/conf/sasl" "$dir/queue" "$dir/data" "$dir/sasldb"
cp "$cert" "$dir/conf/cert.pem"
cp "$key" "$dir/conf/key.pem"
chmod 600 "$dir/conf/key.pem"
cat > "$dir/conf/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = bench.localdomain
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
default_transport = discard
local_transport = discard
relay_transport = discard
maillog_file_prefixes = $dir
maillog_file = $dir/maillog
smtpd_tls_cert_file = $dir/conf/cert.pem
smtpd_tls_key_file = $dir/conf/key.pem
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
smtpd_sasl_local_domain = bench.localdomain
cyrus_sasl_config_path = $dir/conf/sasl
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtpd_client_connection_count_limit = 0
CF
cat > "$dir/conf/master.cf" <<CF
127.0.0.1:$port inet n - n - - smtpd
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
tlsmgr    unix - - n 1000? 1 tlsmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
discard   unix - - n - - discard
postlog   unix-dgram n - n - 1 postlogd
CF
cat > "$dir/conf/sasl/smtpd.conf" <<CF
pwcheck_method: auxprop
auxprop_plugin: sasldb
mech_list: PLAIN LOGIN
sasldb_path: $dir/sasldb/sasldb2
CF
echo "$password" | saslpasswd2 -c -p -f "$dir/sasldb/sasldb2" -u bench.localdomain bench
chown -R postfix "$dir/sasldb"
chmod 755 "$dir" "$dir/conf" "$dir/conf/sasl"
postfix -c "$dir/conf" set-permissions >/dev/null 2>&1 || true
postfix -c "$dir/conf" check
postfix -c "$dir/conf" start
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && exit 0
  sleep 0.1
done
echo "postfix did not start; see $dir/maillog" >&2
exit 1
