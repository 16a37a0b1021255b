#!/usr/bin/env bash
# postfix-milter.sh: one private Postfix instance on loopback whose smtpd hands every inbound
# session to a milter (tlsledger's), and delivers the mail it accepts into a Maildir, so that
# tests can check the observations the milter records and the header it adds to real mail.
#
# Usage:
#   tests/harness/postfix-milter.sh up DIR     create the CA and the instance under DIR and start it
#   tests/harness/postfix-milter.sh down DIR   stop the instance; DIR is left for inspection
#
# Environment (for `up`):
#   MILTER_SMTPD_PORT  the smtpd port on 127.0.0.1 (required; below 32768, not used by other tests)
#   MILTER_SPEC        smtpd_milters, e.g. inet:127.0.0.1:13001 (required)
#
# Postfix settings that make a dead or slow milter harmless (the README's "milter" section shows
# the same): milter_default_action = accept, and short connect/command timeouts.
#
# Layout of DIR:
#   DIR/milter.env                 shell variables describing the lab (port, paths, certificates)
#   DIR/ca/                        private CA; server certificate for mx.milter.test; client
#                                  certificate for client.milter.test (swaks --tls-cert)
#   DIR/postfix-milter/conf/       main.cf, master.cf
#   DIR/postfix-milter/maillog     the instance's log (maillog_file through postlogd)
#   DIR/postfix-milter/mail/inbox/ the Maildir every recipient @milter.test is delivered to
#
# The smtpd logs client ports (smtpd_client_port_logging), so that a log session and the milter's
# session of it name the same endpoint. Everything runs as root on 127.0.0.1 only; no DNS.
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"

readonly NAME=postfix-milter

die() {
    echo "postfix-milter.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 up|down DIR" >&2
    exit 2
}

require_tools() {
    local tool
    for tool in postfix postconf swaks openssl; do
        command -v "$tool" >/dev/null || die "'$tool' not found: run tests/harness/install-deps.sh postfix first"
    done
    id postfix >/dev/null 2>&1 || die "user 'postfix' missing: run tests/harness/install-deps.sh postfix first"
    [[ $(id -u) -eq 0 ]] || die "must run as root (Postfix instances start as root)"
}

# Succeeds when something listens on 127.0.0.1:PORT or on PORT of every address (reads
# /proc/net/tcp, so that the check leaves no "lost connection" lines in any log).
listening() {
    local port_hex
    port_hex=$(printf '%04X' "$1")
    local tables=(/proc/net/tcp)
    [[ -r /proc/net/tcp6 ]] && tables+=(/proc/net/tcp6)
    awk -v a="0100007F:$port_hex" -v any="00000000:$port_hex" \
        -v any6="00000000000000000000000000000000:$port_hex" \
        '$4 == "0A" && ($2 == a || $2 == any || $2 == any6) { found = 1 } END { exit !found }' "${tables[@]}"
}

master_pid() {
    local pid_file="$LAB_DIR/$NAME/queue/pid/master.pid" pid
    [[ -r "$pid_file" ]] || return 1
    pid=$(tr -d ' \n' <"$pid_file")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$LAB_DIR/$NAME/queue" ]] || return 1
    echo "$pid"
}

instance_pids() {
    find /proc -mindepth 2 -maxdepth 2 -name cwd -lname "$LAB_DIR/$NAME/queue" 2>/dev/null | cut -d/ -f3
}

make_ca() {
    local ca="$LAB_DIR/ca"
    [[ -s "$ca/ca.crt" && -s "$ca/mx.crt" && -s "$ca/client.crt" ]] && return 0
    rm -rf "$ca"
    mkdir -p "$ca"
    chmod 0755 "$ca"
    (
        cd "$ca"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
            -subj "/CN=tlsledger milter lab CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:mx.milter.test\n' >server.ext
        printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\nsubjectAltName=DNS:client.milter.test\n' >client.ext
        openssl req -new -newkey rsa:2048 -nodes -keyout mx.key -out mx.csr -subj "/CN=mx.milter.test" 2>/dev/null
        openssl x509 -req -in mx.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out mx.crt -days 3650 \
            -extfile server.ext 2>/dev/null
        openssl req -new -newkey rsa:2048 -nodes -keyout client.key -out client.csr \
            -subj "/CN=client.milter.test" 2>/dev/null
        openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 3650 \
            -extfile client.ext 2>/dev/null
        rm -f ./*.csr ./*.ext
        chmod 0600 ./*.key
        chmod 0644 ./*.crt
    ) || die "certificate creation failed in $ca"
}

write_config() {
    local base="$LAB_DIR/$NAME" ca="$LAB_DIR/ca"
    local uid gid
    uid=$(id -u postfix)
    gid=$(id -g postfix)
    cat >"$base/conf/main.cf" <<EOF
# main.cf of the milter lab; written by tests/harness/postfix-milter.sh.
compatibility_level = 3.6
queue_directory = $base/queue
data_directory = $base/data
mail_owner = postfix
setgid_group = postdrop
syslog_name = $NAME
maillog_file = $base/maillog
maillog_file_prefixes = $base

myhostname = mx.milter.test
mydomain = milter.test
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
smtpd_client_port_logging = yes
smtp_dns_support_level = disabled
alias_maps =
alias_database =
local_recipient_maps =
biff = no
in_flow_delay = 0
smtpd_banner = \$myhostname ESMTP milter lab
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
default_transport = error:5.1.2 the milter lab delivers to milter.test only
relay_transport = \$default_transport

# Every recipient @milter.test lands in one Maildir (a file per message).
virtual_mailbox_domains = milter.test
virtual_mailbox_base = $base/mail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:$uid
virtual_gid_maps = static:$gid
virtual_minimum_uid = 1

# STARTTLS offered (TLS 1.2 and 1.3); client certificates asked for and checked against the CA.
smtpd_tls_security_level = may
smtpd_tls_cert_file = $ca/mx.crt
smtpd_tls_key_file = $ca/mx.key
smtpd_tls_CAfile = $ca/ca.crt
smtpd_tls_ask_ccert = yes
smtpd_tls_loglevel = 1
smtpd_tls_session_cache_database =
tls_random_source = dev:/dev/urandom

# The milter, and what makes it harmless when it is dead or slow: accept on any milter failure.
smtpd_milters = $MILTER_SPEC
milter_default_action = accept
milter_protocol = 6
milter_connect_timeout = 5s
milter_command_timeout = 5s
milter_content_timeout = 10s
EOF
    cat >"$base/conf/master.cf" <<EOF
# master.cf of the milter lab; written by tests/harness/postfix-milter.sh. Nothing is chrooted.
127.0.0.1:$MILTER_SMTPD_PORT inet n - n - - smtpd
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
tlsmgr     unix  -       -       n       1000?   1       tlsmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
virtual    unix  -       n       n       -       -       virtual
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
EOF
}

write_env() {
    cat >"$LAB_DIR/milter.env" <<EOF
# Written by tests/harness/postfix-milter.sh up.
LAB_DIR=$LAB_DIR
SMTPD_ADDR=127.0.0.1
SMTPD_PORT=$MILTER_SMTPD_PORT
MILTER_SPEC=$MILTER_SPEC
CA_CERT=$LAB_DIR/ca/ca.crt
CLIENT_CERT=$LAB_DIR/ca/client.crt
CLIENT_KEY=$LAB_DIR/ca/client.key
MAILLOG=$LAB_DIR/$NAME/maillog
MAILDIR=$LAB_DIR/$NAME/mail/inbox
EOF
}

stop_instance() {
    local pid deadline
    if pid=$(master_pid); then
        postfix -c "$LAB_DIR/$NAME/conf" stop >/dev/null 2>&1 || true
        deadline=$((SECONDS + 15))
        while kill -0 "$pid" 2>/dev/null && [[ $SECONDS -lt $deadline ]]; do
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    deadline=$((SECONDS + 10))
    while [[ -n "$(instance_pids)" && $SECONDS -lt $deadline ]]; do
        sleep 0.1
    done
    for pid in $(instance_pids); do
        kill -KILL "$pid" 2>/dev/null || true
    done
}

cmd_up() {
    require_tools
    [[ "${MILTER_SMTPD_PORT:-}" =~ ^[0-9]+$ ]] || die "MILTER_SMTPD_PORT must be a port number"
    [[ -n "${MILTER_SPEC:-}" ]] || die "MILTER_SPEC (smtpd_milters) must be set"
    stop_instance
    listening "$MILTER_SMTPD_PORT" && die "port 127.0.0.1:$MILTER_SMTPD_PORT is in use"
    make_ca
    local base="$LAB_DIR/$NAME"
    rm -rf "$base"
    mkdir -p "$base/conf" "$base/queue" "$base/data" "$base/mail"
    chmod 0755 "$LAB_DIR" "$base" "$base/conf" "$base/queue"
    chown postfix:postfix "$base/data" "$base/mail"
    chmod 0700 "$base/data"
    write_config
    # Postfix waits while a configuration file's mtime is in the current second.
    touch -d '-1 minute' "$base/conf"/*
    local out
    out=$(postfix -c "$base/conf" check 2>&1) || die "postfix check failed: $out"
    out=$(postfix -c "$base/conf" start 2>&1) || die "postfix start failed: $out$(tail -n 20 "$base/maillog" 2>/dev/null)"
    local deadline=$((SECONDS + 20))
    until listening "$MILTER_SMTPD_PORT"; do
        [[ $SECONDS -lt $deadline ]] || die "smtpd does not listen on $MILTER_SMTPD_PORT after 20 s$(tail -n 20 "$base/maillog" 2>/dev/null)"
        sleep 0.1
    done
    master_pid >/dev/null || die "the master is not running"
    write_env
    echo "postfix-milter.sh: lab is up in $LAB_DIR"
}

[[ $# -eq 2 && -n "$2" ]] || usage
[[ "$2" != *[[:space:]]* ]] || die "the lab folder must not contain white space: '$2'"
case "$1" in
    up) mkdir -p "$2" ;;
    down) [[ -e "$2" ]] || { echo "postfix-milter.sh: $2 does not exist; nothing to stop"; exit 0; } ;;
    *) usage ;;
esac
LAB_DIR=$(cd "$2" && pwd -P)
case "$1" in
    up) cmd_up ;;
    down) stop_instance && echo "postfix-milter.sh: lab in $LAB_DIR is down" ;;
esac
