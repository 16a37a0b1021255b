#!/usr/bin/env bash
# postfix-lab.sh: runs two private Postfix instances on loopback that send each
# other mail over every kind of STARTTLS outcome, so that tests can parse real
# Postfix logs.
#
# Usage:
#   tests/harness/postfix-lab.sh up DIR     create the CA and both instances under DIR and start them
#   tests/harness/postfix-lab.sh send DIR   inject one message per test domain and wait for every final status
#   tests/harness/postfix-lab.sh send-one DIR RCPT
#                                           inject one message to RCPT and wait for its status; prints
#                                           "QUEUE_ID STATUS" (also for broken.test, which `send` skips)
#   tests/harness/postfix-lab.sh reload DIR postfix-out|postfix-in [PARAM=VALUE | SERVICE/TYPE/PARAM=VALUE]...
#                                           set main.cf parameters (postconf -e) or master.cf service
#                                           parameters (postconf -P), reload, and wait for the master's
#                                           "reload" line and for the old daemons to be gone
#   tests/harness/postfix-lab.sh down DIR   stop both instances; DIR is left for inspection
#
# Environment: LAB_PORT_BASE (default 24000) is the first of seven consecutive
# TCP ports; give each concurrent lab its own base. Each listener also has its
# own loopback address, so that every receiver is a distinct endpoint (IP) to
# tlsledger's reputation engine. Linux routes all of 127.0.0.0/8 to lo, so
# these addresses need no setup; nothing binds or sends outside 127.0.0.0/8.
# Run tests/harness/install-deps.sh first. Everything runs as root.
#
# Layout of DIR (one subfolder per MTA instance, so that other MTAs' labs can
# later sit beside it):
#   DIR/lab.env            shell variables describing the lab (addresses, ports, log paths)
#   DIR/ca/                private CA, server certificates and keys
#   DIR/postfix-out/       the sender: conf/ (main.cf, master.cf, maps), queue/, data/, maillog
#   DIR/postfix-in/        the receiver: same layout
#   DIR/send/              swaks transcripts and the queue ids of the last `send`
#
# Listeners (address, port relative to LAB_PORT_BASE):
#   127.0.0.1 +0  sender smtpd, STARTTLS offered (swaks injects here)
#   127.0.0.2 +1  receiver (a): STARTTLS with the CA-signed certificate for mx.ca.test
#   127.0.0.3 +2  receiver (b): STARTTLS with a self-signed certificate
#   127.0.0.4 +3  receiver (c): no STARTTLS offered
#   127.0.0.5 +4  receiver (d): STARTTLS with an expired CA-signed certificate for mx.ca.test
#   127.0.0.6 +5  receiver (e): no STARTTLS offered, like (c), for required.test only
#   127.0.0.7 +6  receiver (f): STARTTLS offered, but every handshake fails: the listener
#                 allows only TLS <= 1.2 with the "null" cipher grade (no encryption), which
#                 no Postfix client offers ("no shared cipher"), for broken.test only
# swaks and the sender's smtp client (smtp_bind_address) both connect from
# 127.0.0.1, so every inbound session, on either side, comes from 127.0.0.1.
#
# Routing in the sender (transport_maps):
#   verified.test   -> (a) through the smtp-policy transport: policy "secure match=mx.ca.test", logs "Verified"
#   trusted.test    -> (a) at level may, logs "Trusted"
#   selfsigned.test -> (b) at level may, logs "Untrusted"
#   plain.test      -> (c) at level may, plaintext delivery
#   required.test   -> (e) through smtp-policy: policy "encrypt", deferred, "TLS is required, but was not offered"
#   expired.test    -> (d) through smtp-policy: policy "secure match=mx.ca.test", deferred, certificate expired
#   broken.test     -> (f) at level may: "Cannot start TLS: handshake failure", deferred (only
#                      `send-one` sends there, so that `send`'s runs keep their shape)
# So 127.0.0.4 only ever sees plaintext deliveries and 127.0.0.6 only
# "TLS required but missing".
# The smtp-policy transport logs as postfix-out/policy/smtp, the other sender
# daemons as postfix-out/<daemon> and the receiver as postfix-in/<daemon>.
set -euo pipefail

# Postfix's commands live in /usr/sbin, which a test runner's PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

readonly SENDER=postfix-out
readonly RECEIVER=postfix-in
readonly DOMAINS=(verified.test trusted.test selfsigned.test plain.test required.test expired.test)
readonly WAIT_SECS=60
# One loopback address per listener (see the header). Not readonly: `send`
# sources lab.env, which sets the same names to the same values.
SENDER_SMTPD_ADDR=127.0.0.1
RECEIVER_CA_ADDR=127.0.0.2
RECEIVER_SELFSIGNED_ADDR=127.0.0.3
RECEIVER_PLAIN_ADDR=127.0.0.4
RECEIVER_EXPIRED_ADDR=127.0.0.5
RECEIVER_REQUIRED_ADDR=127.0.0.6
RECEIVER_BROKEN_ADDR=127.0.0.7
readonly RECEIVER_ADDRS=("$RECEIVER_CA_ADDR" "$RECEIVER_SELFSIGNED_ADDR" "$RECEIVER_PLAIN_ADDR"
    "$RECEIVER_EXPIRED_ADDR" "$RECEIVER_REQUIRED_ADDR" "$RECEIVER_BROKEN_ADDR")

die() {
    echo "postfix-lab.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 up|send|down DIR, or $0 send-one DIR RCPT" >&2
    exit 2
}

# Checks that the tools from install-deps.sh are present, with a message that
# says how to get them.
require_tools() {
    local tool
    for tool in postfix postconf postqueue swaks openssl; do
        command -v "$tool" >/dev/null ||
            die "'$tool' not found: run tests/harness/install-deps.sh first"
    done
    id postfix >/dev/null 2>&1 || die "user 'postfix' missing: run tests/harness/install-deps.sh first"
    getent group postdrop >/dev/null || die "group 'postdrop' missing: run tests/harness/install-deps.sh first"
    [[ $(id -u) -eq 0 ]] || die "must run as root (Postfix instances start as root)"
}

# Sets the port variables from LAB_PORT_BASE, and LISTENERS to every ADDR:PORT
# the lab binds.
set_ports() {
    local base=${LAB_PORT_BASE:-24000}
    [[ "$base" =~ ^[0-9]+$ && $base -ge 1024 && $base -le 65530 ]] ||
        die "LAB_PORT_BASE must be a number from 1024 to 65530, got '$base'"
    PORT_BASE=$base
    SENDER_SMTPD_PORT=$((base + 0))
    RECEIVER_CA_PORT=$((base + 1))
    RECEIVER_SELFSIGNED_PORT=$((base + 2))
    RECEIVER_PLAIN_PORT=$((base + 3))
    RECEIVER_EXPIRED_PORT=$((base + 4))
    RECEIVER_REQUIRED_PORT=$((base + 5))
    RECEIVER_BROKEN_PORT=$((base + 6))
    LISTENERS=("$SENDER_SMTPD_ADDR:$SENDER_SMTPD_PORT"
        "$RECEIVER_CA_ADDR:$RECEIVER_CA_PORT"
        "$RECEIVER_SELFSIGNED_ADDR:$RECEIVER_SELFSIGNED_PORT"
        "$RECEIVER_PLAIN_ADDR:$RECEIVER_PLAIN_PORT"
        "$RECEIVER_EXPIRED_ADDR:$RECEIVER_EXPIRED_PORT"
        "$RECEIVER_REQUIRED_ADDR:$RECEIVER_REQUIRED_PORT"
        "$RECEIVER_BROKEN_ADDR:$RECEIVER_BROKEN_PORT")
}

# Succeeds when a socket listens on ADDR:PORT (an IPv4 address), or on PORT of
# every address (0.0.0.0, or :: without IPV6_V6ONLY), which would take ADDR:PORT
# too. It reads /proc/net/tcp instead of connecting, so that checks leave no
# "lost connection" lines in the logs.
listening() {
    local addr=${1%:*} port=${1##*:}
    local a b c d port_hex
    local tables=(/proc/net/tcp)
    # Without IPv6 in the kernel there is no tcp6 table, and awk must not fail on it.
    [[ -r /proc/net/tcp6 ]] && tables+=(/proc/net/tcp6)
    IFS=. read -r a b c d <<<"$addr"
    port_hex=$(printf '%04X' "$port")
    # /proc/net/tcp prints an IPv4 address as one 32-bit word in host byte
    # order, which is little-endian here: 127.0.0.2 is 0200007F.
    # Fields: sl local_address rem_address st ...; state 0A is LISTEN.
    awk -v a="$(printf '%02X%02X%02X%02X' "$d" "$c" "$b" "$a"):$port_hex" -v any="00000000:$port_hex" \
        -v any6="00000000000000000000000000000000:$port_hex" \
        '$4 == "0A" && ($2 == a || $2 == any || $2 == any6) { found = 1 } END { exit !found }' "${tables[@]}"
}

# Prints the pid of an instance's master process if it is running.
master_pid() {
    local pid_file="$LAB_DIR/$1/queue/pid/master.pid"
    local pid
    [[ -r "$pid_file" ]] || return 1
    pid=$(tr -d ' \n' <"$pid_file")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    # The pid file can outlive the master; the process must still be a
    # Postfix master whose working directory is this instance's queue.
    [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$LAB_DIR/$1/queue" ]] || return 1
    echo "$pid"
}

# Prints the pids of every process that works in an instance's queue
# directory: the master and all of its daemons chdir there.
instance_pids() {
    local queue="$LAB_DIR/$1/queue"
    # One find over /proc instead of a readlink per process; -lname matches
    # the target of the cwd symbolic link.
    find /proc -mindepth 2 -maxdepth 2 -name cwd -lname "$queue" 2>/dev/null |
        cut -d/ -f3
}

# Creates the CA and the server certificates, once per lab directory.
make_ca() {
    local ca="$LAB_DIR/ca"
    if [[ -s "$ca/ca.crt" && -s "$ca/mx.crt" && -s "$ca/selfsigned.crt" && -s "$ca/expired.crt" ]]; then
        return 0
    fi
    rm -rf "$ca"
    mkdir -p "$ca/newcerts"
    chmod 0755 "$ca"
    (
        cd "$ca"
        : >index.txt
        echo 1000 >serial
        cat >ca.cnf <<EOF
# openssl ca configuration for the lab CA; written by postfix-lab.sh.
[ ca ]
default_ca = lab_ca

[ lab_ca ]
dir = $ca
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
serial = \$dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no

[ policy_any ]
commonName = supplied

[ server_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:mx.ca.test
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
        # The CA itself: ten years, RSA.
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
            -subj "/CN=tlsledger lab CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

        # The CA-signed server certificate for mx.ca.test, valid now.
        openssl req -new -newkey rsa:2048 -nodes -keyout mx.key -out mx.csr -subj "/CN=mx.ca.test" 2>/dev/null
        openssl ca -batch -config ca.cnf -extensions server_ext -cert ca.crt -keyfile ca.key \
            -in mx.csr -out mx.crt -days 3650 -notext 2>/dev/null

        # The same name, signed by the same CA, but expired a year ago.
        openssl req -new -newkey rsa:2048 -nodes -keyout expired.key -out expired.csr -subj "/CN=mx.ca.test" 2>/dev/null
        openssl ca -batch -config ca.cnf -extensions server_ext -cert ca.crt -keyfile ca.key \
            -in expired.csr -out expired.crt -notext \
            -startdate "$(date -u -d '-2 years' +%Y%m%d%H%M%SZ)" \
            -enddate "$(date -u -d '-1 year' +%Y%m%d%H%M%SZ)" 2>/dev/null

        # A self-signed ECDSA certificate, so that the logs also show an EC key.
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout selfsigned.key -out selfsigned.crt -days 3650 \
            -subj "/CN=mx.selfsigned.test" -addext "subjectAltName=DNS:mx.selfsigned.test" 2>/dev/null

        rm -f ./*.csr
        chmod 0600 ./*.key
        chmod 0644 ./*.crt
    ) || die "certificate creation failed in $ca"
}

# Writes the main.cf settings that both instances share.
write_common_main_cf() {
    local name=$1 myhostname=$2
    local base="$LAB_DIR/$name"
    cat <<EOF
# main.cf of the lab instance $name; written by tests/harness/postfix-lab.sh.
compatibility_level = 3.6
queue_directory = $base/queue
data_directory = $base/data
mail_owner = postfix
setgid_group = postdrop

# Logging goes through postlogd to a file: there is no syslog daemon.
syslog_name = $name
maillog_file = $base/maillog
maillog_file_prefixes = $base

# Loopback only, and no DNS at all, so nothing leaves the machine.
# inet_interfaces may only name addresses that an interface carries, which
# 127.0.0.2 and up are not (they are only routed to lo): Postfix stops with a
# fatal error, which \`postfix check\` cannot print without a terminal. The
# receiver's listeners name their address in master.cf instead, and master(8)
# binds those as given.
myhostname = $myhostname
mydomain = lab.test
myorigin = \$myhostname
mydestination =
inet_interfaces = $SENDER_SMTPD_ADDR
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
smtp_bind_address = $SENDER_SMTPD_ADDR

# No local delivery, no aliases, no biff, no flow-control delays.
alias_maps =
alias_database =
local_recipient_maps =
biff = no
in_flow_delay = 0
smtpd_banner = \$myhostname ESMTP lab

# TLS logging: one summary line per handshake in both directions.
smtpd_tls_loglevel = 1
smtp_tls_loglevel = 1
tls_random_source = dev:/dev/urandom
EOF
}

# Writes the master.cf services that both instances need; the caller adds
# its listeners and transports.
write_common_master_cf() {
    cat <<'EOF'
# master.cf of a lab instance; written by tests/harness/postfix-lab.sh.
# Nothing is chrooted, so no copies of system files are needed.
# service  type  private unpriv  chroot  wakeup  maxproc command + args
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
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
EOF
}

write_sender_config() {
    local conf="$LAB_DIR/$SENDER/conf"
    local ca="$LAB_DIR/ca"
    {
        write_common_main_cf "$SENDER" out.lab.test
        cat <<EOF

# Inbound: swaks injects here; STARTTLS is offered but not required.
smtpd_tls_security_level = may
smtpd_tls_cert_file = $ca/mx.crt
smtpd_tls_key_file = $ca/mx.key
smtpd_relay_restrictions = permit_mynetworks, reject

# Outbound: opportunistic TLS that can tell "Trusted" from "Untrusted".
smtp_tls_security_level = may
smtp_tls_CAfile = $ca/ca.crt
smtp_tls_session_cache_database =
smtp_tls_connection_reuse = no
smtp_connection_cache_on_demand = no
transport_maps = texthash:$conf/transport

# Mail for anything but the test domains fails here, and nothing bounces.
default_transport = error:5.1.2 the lab delivers to the test domains only
relay_transport = \$default_transport
soft_bounce = yes
EOF
    } >"$conf/main.cf"

    {
        write_common_master_cf
        cat <<EOF
# Where swaks injects.
$SENDER_SMTPD_ADDR:$SENDER_SMTPD_PORT inet n - n - - smtpd
# The transport whose destinations have an explicit TLS policy; it logs
# under its own syslog_name, as multi-service setups do.
smtp-policy unix - - n - - smtp
  -o syslog_name=$SENDER/policy
  -o smtp_tls_policy_maps=texthash:$conf/tls_policy
EOF
    } >"$conf/master.cf"

    cat >"$conf/transport" <<EOF
# Test domain -> receiver listener; written by postfix-lab.sh.
verified.test   smtp-policy:[$RECEIVER_CA_ADDR]:$RECEIVER_CA_PORT
trusted.test    smtp:[$RECEIVER_CA_ADDR]:$RECEIVER_CA_PORT
selfsigned.test smtp:[$RECEIVER_SELFSIGNED_ADDR]:$RECEIVER_SELFSIGNED_PORT
plain.test      smtp:[$RECEIVER_PLAIN_ADDR]:$RECEIVER_PLAIN_PORT
required.test   smtp-policy:[$RECEIVER_REQUIRED_ADDR]:$RECEIVER_REQUIRED_PORT
expired.test    smtp-policy:[$RECEIVER_EXPIRED_ADDR]:$RECEIVER_EXPIRED_PORT
broken.test     smtp:[$RECEIVER_BROKEN_ADDR]:$RECEIVER_BROKEN_PORT
EOF

    cat >"$conf/tls_policy" <<EOF
# TLS policy of the smtp-policy transport; written by postfix-lab.sh.
[$RECEIVER_CA_ADDR]:$RECEIVER_CA_PORT       secure match=mx.ca.test
[$RECEIVER_REQUIRED_ADDR]:$RECEIVER_REQUIRED_PORT encrypt
[$RECEIVER_EXPIRED_ADDR]:$RECEIVER_EXPIRED_PORT  secure match=mx.ca.test
EOF
}

write_receiver_config() {
    local conf="$LAB_DIR/$RECEIVER/conf"
    local ca="$LAB_DIR/ca"
    {
        write_common_main_cf "$RECEIVER" in.lab.test
        cat <<EOF

# Long queue ids here and short ones in the sender, so that logs show both.
enable_long_queue_ids = yes

# Inbound: STARTTLS with the CA-signed certificate unless a listener says otherwise.
smtpd_tls_security_level = may
smtpd_tls_cert_file = $ca/mx.crt
smtpd_tls_key_file = $ca/mx.key
smtpd_tls_session_cache_database =

# Every test domain is accepted and its mail is thrown away.
relay_domains = ${DOMAINS[*]} broken.test
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relay_transport = discard:lab-sink
default_transport = discard:lab-sink
EOF
    } >"$conf/main.cf"

    {
        write_common_master_cf
        cat <<EOF
# (a) STARTTLS with the CA-signed certificate.
$RECEIVER_CA_ADDR:$RECEIVER_CA_PORT inet n - n - - smtpd
# (b) STARTTLS with a self-signed certificate.
$RECEIVER_SELFSIGNED_ADDR:$RECEIVER_SELFSIGNED_PORT inet n - n - - smtpd
  -o smtpd_tls_cert_file=$ca/selfsigned.crt
  -o smtpd_tls_key_file=$ca/selfsigned.key
# (c) No STARTTLS at all.
$RECEIVER_PLAIN_ADDR:$RECEIVER_PLAIN_PORT inet n - n - - smtpd
  -o smtpd_tls_security_level=none
# (d) STARTTLS with an expired CA-signed certificate.
$RECEIVER_EXPIRED_ADDR:$RECEIVER_EXPIRED_PORT inet n - n - - smtpd
  -o smtpd_tls_cert_file=$ca/expired.crt
  -o smtpd_tls_key_file=$ca/expired.key
# (e) No STARTTLS at all, like (c); only required.test comes here.
$RECEIVER_REQUIRED_ADDR:$RECEIVER_REQUIRED_PORT inet n - n - - smtpd
  -o smtpd_tls_security_level=none
# (f) STARTTLS offered, every handshake fails: null ciphers only (TLS 1.3 has none),
# which clients never offer, so the server answers "no shared cipher".
$RECEIVER_BROKEN_ADDR:$RECEIVER_BROKEN_PORT inet n - n - - smtpd
  -o smtpd_tls_protocols=<=TLSv1.2
  -o smtpd_tls_mandatory_protocols=<=TLSv1.2
  -o smtpd_tls_ciphers=null
  -o smtpd_tls_mandatory_ciphers=null
EOF
    } >"$conf/master.cf"
}

# Creates an instance's folders with the ownership Postfix expects.
make_instance_dirs() {
    local base="$LAB_DIR/$1"
    mkdir -p "$base/conf" "$base/queue" "$base/data"
    chmod 0755 "$base" "$base/conf" "$base/queue"
    chown root:root "$base/queue"
    chown postfix:postfix "$base/data"
    chmod 0700 "$base/data"
}

# Starts one instance and checks that its master runs.
start_instance() {
    local name=$1
    local conf="$LAB_DIR/$name/conf"
    local out
    # `postfix check` creates the missing queue subfolders with the right owners.
    # Postfix waits, 300 ms at a time, until a configuration file's mtime is
    # in the past ("file is being written"); files written within the current
    # second would cost seconds at every start, so they are backdated.
    touch -d '-1 minute' "$conf"/*
    if ! out=$(postfix -c "$conf" check 2>&1); then
        die "postfix check failed for $name: $out"
    fi
    if ! out=$(postfix -c "$conf" start 2>&1); then
        die "postfix start failed for $name: $out$(log_tail "$name")"
    fi
}

# Prints the end of an instance's log, for error messages.
log_tail() {
    local log="$LAB_DIR/$1/maillog"
    if [[ -r "$log" ]]; then
        printf '\n--- last lines of %s ---\n' "$log"
        tail -n 20 "$log"
    fi
}

# Stops the named instances; succeeds when they were not running. The stop
# requests go out together because each master takes about two seconds to
# exit after its SIGTERM.
stop_instances() {
    local name pid deadline
    local masters=()
    for name in "$@"; do
        if pid=$(master_pid "$name"); then
            postfix -c "$LAB_DIR/$name/conf" stop >/dev/null 2>&1 || true
            masters+=("$pid:$name")
        fi
    done
    local entry
    deadline=$((SECONDS + 15))
    for entry in "${masters[@]}"; do
        pid=${entry%%:*}
        name=${entry#*:}
        while kill -0 "$pid" 2>/dev/null && [[ $SECONDS -lt $deadline ]]; do
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "postfix-lab.sh: master $pid of $name did not stop; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    # The daemons exit on their own once the master is gone; wait for them,
    # then end any straggler by its pid.
    for name in "$@"; do
        deadline=$((SECONDS + 10))
        while [[ -n "$(instance_pids "$name")" && $SECONDS -lt $deadline ]]; do
            sleep 0.1
        done
        for pid in $(instance_pids "$name"); do
            echo "postfix-lab.sh: ending leftover process $pid of $name" >&2
            kill -KILL "$pid" 2>/dev/null || true
        done
    done
}

write_lab_env() {
    cat >"$LAB_DIR/lab.env" <<EOF
# Written by tests/harness/postfix-lab.sh up; source it from a shell.
LAB_DIR=$LAB_DIR
LAB_PORT_BASE=$PORT_BASE
POSTFIX_VERSION=$(postconf -d -h mail_version)
CA_CERT=$LAB_DIR/ca/ca.crt
SENDER_NAME=$SENDER
SENDER_CONF=$LAB_DIR/$SENDER/conf
SENDER_LOG=$LAB_DIR/$SENDER/maillog
SENDER_SMTPD_ADDR=$SENDER_SMTPD_ADDR
SENDER_SMTPD_PORT=$SENDER_SMTPD_PORT
RECEIVER_NAME=$RECEIVER
RECEIVER_CONF=$LAB_DIR/$RECEIVER/conf
RECEIVER_LOG=$LAB_DIR/$RECEIVER/maillog
RECEIVER_CA_ADDR=$RECEIVER_CA_ADDR
RECEIVER_CA_PORT=$RECEIVER_CA_PORT
RECEIVER_SELFSIGNED_ADDR=$RECEIVER_SELFSIGNED_ADDR
RECEIVER_SELFSIGNED_PORT=$RECEIVER_SELFSIGNED_PORT
RECEIVER_PLAIN_ADDR=$RECEIVER_PLAIN_ADDR
RECEIVER_PLAIN_PORT=$RECEIVER_PLAIN_PORT
RECEIVER_EXPIRED_ADDR=$RECEIVER_EXPIRED_ADDR
RECEIVER_EXPIRED_PORT=$RECEIVER_EXPIRED_PORT
RECEIVER_REQUIRED_ADDR=$RECEIVER_REQUIRED_ADDR
RECEIVER_REQUIRED_PORT=$RECEIVER_REQUIRED_PORT
RECEIVER_BROKEN_ADDR=$RECEIVER_BROKEN_ADDR
RECEIVER_BROKEN_PORT=$RECEIVER_BROKEN_PORT
EOF
}

cmd_up() {
    require_tools
    set_ports
    mkdir -p "$LAB_DIR"
    chmod 0755 "$LAB_DIR"

    # A lab that is already up is stopped first, so `up` always starts clean.
    stop_instances "$SENDER" "$RECEIVER"

    local listener
    for listener in "${LISTENERS[@]}"; do
        if listening "$listener"; then
            die "port $listener is in use; choose another LAB_PORT_BASE"
        fi
    done

    make_ca

    # Fresh instance folders every time: an empty queue and empty logs.
    local name
    for name in "$SENDER" "$RECEIVER"; do
        rm -rf "${LAB_DIR:?}/$name"
        make_instance_dirs "$name"
    done
    rm -rf "${LAB_DIR:?}/send"
    write_sender_config
    write_receiver_config

    start_instance "$RECEIVER"
    start_instance "$SENDER"

    # `postfix start` returns once the master has bound its listeners; this
    # checks that every one of them is there.
    local deadline=$((SECONDS + 20))
    for listener in "${LISTENERS[@]}"; do
        until listening "$listener"; do
            if [[ $SECONDS -ge $deadline ]]; then
                die "nothing listens on $listener after 20 s$(log_tail "$SENDER")$(log_tail "$RECEIVER")"
            fi
            sleep 0.1
        done
    done
    master_pid "$SENDER" >/dev/null || die "the $SENDER master is not running$(log_tail "$SENDER")"
    master_pid "$RECEIVER" >/dev/null || die "the $RECEIVER master is not running$(log_tail "$RECEIVER")"

    write_lab_env
    echo "postfix-lab.sh: lab is up in $LAB_DIR"
    cat "$LAB_DIR/lab.env"
}

# Injects one message with swaks; TLS is "tls" or "plain". Prints the queue
# id that the sender's smtpd returned.
inject() {
    local rcpt=$1 tls=$2 run_id=$3
    local transcript="$LAB_DIR/send/${rcpt%%@*}-${rcpt#*@}-$tls.txt"
    local tls_args=()
    if [[ "$tls" == tls ]]; then
        tls_args=(--tls)
    fi
    if ! swaks --server "$SENDER_SMTPD_ADDR" --port "$SENDER_SMTPD_PORT" --timeout 20 \
        --ehlo client.lab.test --from "lab@out.lab.test" --to "$rcpt" \
        --header "Subject: tlsledger lab $run_id $rcpt $tls" \
        --body "Test message of the tlsledger Postfix lab." \
        "${tls_args[@]}" >"$transcript" 2>&1; then
        die "swaks failed for $rcpt ($tls); transcript in $transcript:$(printf '\n'; tail -n 15 "$transcript")"
    fi
    local queue_id
    queue_id=$(sed -n 's/.*250 2\.0\.0 Ok: queued as \([0-9A-Za-z]*\).*/\1/p' "$transcript" | tail -n 1)
    [[ -n "$queue_id" ]] || die "no queue id in the swaks transcript $transcript"
    echo "$queue_id"
}

# Counts the lines of FILE that match the extended regular expression RE.
count_lines() {
    grep -c -E -- "$2" "$1" 2>/dev/null || true
}

cmd_send() {
    require_tools
    [[ -r "$LAB_DIR/lab.env" ]] || die "$LAB_DIR/lab.env not found: run '$0 up $LAB_DIR' first"
    # shellcheck disable=SC1091
    source "$LAB_DIR/lab.env"
    master_pid "$SENDER" >/dev/null || die "the $SENDER instance is not running: run '$0 up $LAB_DIR' first"
    master_pid "$RECEIVER" >/dev/null || die "the $RECEIVER instance is not running: run '$0 up $LAB_DIR' first"
    mkdir -p "$LAB_DIR/send"

    local run_id
    run_id="run-$(date -u +%Y%m%dT%H%M%SZ)-$$"
    local queue_ids=() rcpts=()
    local domain
    # One message per test domain, injected over STARTTLS, and one more
    # injected in plaintext.
    for domain in "${DOMAINS[@]}"; do
        rcpts+=("user@$domain")
        queue_ids+=("$(inject "user@$domain" tls "$run_id")")
    done
    rcpts+=("plain-inject@trusted.test")
    queue_ids+=("$(inject "plain-inject@trusted.test" plain "$run_id")")

    local i
    : >"$LAB_DIR/send/queue_ids"
    for i in "${!queue_ids[@]}"; do
        echo "${queue_ids[$i]} ${rcpts[$i]}" >>"$LAB_DIR/send/queue_ids"
    done

    # Wait until every message has a status line from a delivery agent in the
    # sender's log, and until every SMTP session in both logs has ended: the
    # receiver logs "disconnect" after the sender has logged its status, and
    # each status line with a relay address is one connection to the receiver
    # (the connection cache is off).
    local deadline=$((SECONDS + WAIT_SECS))
    local pending=() n_connect n_disconnect n_relayed busy name log
    # relay=HOST[ADDR]:PORT names one of the receiver's addresses: 127\.0\.0\.2|...
    local relay_re
    relay_re=$(IFS='|' && echo "${RECEIVER_ADDRS[*]//./\\.}")
    while :; do
        pending=()
        for i in "${!queue_ids[@]}"; do
            if ! grep -q -E -- ": ${queue_ids[$i]}: to=<${rcpts[$i]}>, .* status=[a-z]+ " "$SENDER_LOG" 2>/dev/null; then
                pending+=("${queue_ids[$i]} (${rcpts[$i]})")
            fi
        done
        busy=""
        for name in "$SENDER" "$RECEIVER"; do
            log="$LAB_DIR/$name/maillog"
            n_connect=$(count_lines "$log" '/smtpd\[[0-9]+\]: connect from ')
            n_disconnect=$(count_lines "$log" '/smtpd\[[0-9]+\]: disconnect from ')
            if [[ $n_connect -ne $n_disconnect ]]; then
                busy+=" $name has $((n_connect - n_disconnect)) open smtpd session(s);"
            fi
        done
        n_relayed=$(count_lines "$SENDER_LOG" ", relay=($relay_re)\\[[0-9.]+\\]:[0-9]+, .* status=")
        n_disconnect=$(count_lines "$RECEIVER_LOG" '/smtpd\[[0-9]+\]: disconnect from ')
        if [[ $n_disconnect -lt $n_relayed ]]; then
            busy+=" $RECEIVER has logged $n_disconnect of $n_relayed sessions;"
        fi
        if [[ ${#pending[@]} -eq 0 && -z "$busy" ]]; then
            break
        fi
        if [[ $SECONDS -ge $deadline ]]; then
            die "after ${WAIT_SECS} s, no final status for: ${pending[*]:-none};${busy}
queue of $SENDER: $(postqueue -c "$SENDER_CONF" -p 2>&1 | tail -n 20)$(log_tail "$SENDER")$(log_tail "$RECEIVER")"
        fi
        sleep 0.2
    done

    echo "postfix-lab.sh: all ${#queue_ids[@]} messages have a status ($run_id):"
    for i in "${!queue_ids[@]}"; do
        grep -E -- ": ${queue_ids[$i]}: to=<${rcpts[$i]}>, .* status=" "$SENDER_LOG" | tail -n 1 |
            sed -E 's/.*: ([0-9A-Za-z]+): to=<([^>]*)>.* status=([a-z]+) (.*)/  \1 \2 \3 \4/'
    done
}

# Waits until every message and session of both instances is finished: every
# smtpd session has ended, and the receiver has logged a disconnect for every
# status line of the sender that names a receiver address.
wait_sessions_ended() {
    local deadline=$1 what=$2
    local busy n_connect n_disconnect n_relayed name log relay_re
    relay_re=$(IFS='|' && echo "${RECEIVER_ADDRS[*]//./\\.}")
    while :; do
        busy=""
        for name in "$SENDER" "$RECEIVER"; do
            log="$LAB_DIR/$name/maillog"
            n_connect=$(count_lines "$log" '/smtpd\[[0-9]+\]: connect from ')
            n_disconnect=$(count_lines "$log" '/smtpd\[[0-9]+\]: disconnect from ')
            if [[ $n_connect -ne $n_disconnect ]]; then
                busy+=" $name has $((n_connect - n_disconnect)) open smtpd session(s);"
            fi
        done
        n_relayed=$(count_lines "$SENDER_LOG" ", relay=($relay_re)\\[[0-9.]+\\]:[0-9]+, .* status=")
        n_disconnect=$(count_lines "$RECEIVER_LOG" '/smtpd\[[0-9]+\]: disconnect from ')
        if [[ $n_disconnect -lt $n_relayed ]]; then
            busy+=" $RECEIVER has logged $n_disconnect of $n_relayed sessions;"
        fi
        [[ -z "$busy" ]] && return 0
        if [[ $SECONDS -ge $deadline ]]; then
            die "after ${WAIT_SECS} s, $what:${busy}$(log_tail "$SENDER")$(log_tail "$RECEIVER")"
        fi
        sleep 0.2
    done
}

# Loads lab.env and checks that both instances run.
load_running_lab() {
    require_tools
    [[ -r "$LAB_DIR/lab.env" ]] || die "$LAB_DIR/lab.env not found: run '$0 up $LAB_DIR' first"
    # shellcheck disable=SC1091
    source "$LAB_DIR/lab.env"
    master_pid "$SENDER" >/dev/null || die "the $SENDER instance is not running: run '$0 up $LAB_DIR' first"
    master_pid "$RECEIVER" >/dev/null || die "the $RECEIVER instance is not running: run '$0 up $LAB_DIR' first"
    mkdir -p "$LAB_DIR/send"
}

cmd_send_one() {
    local rcpt=$1
    load_running_lab
    local queue_id line
    queue_id=$(inject "$rcpt" tls "one-$(date -u +%Y%m%dT%H%M%SZ)-$$")
    local deadline=$((SECONDS + WAIT_SECS))
    until line=$(grep -E -- ": $queue_id: to=<$rcpt>, .* status=[a-z]+ " "$SENDER_LOG" 2>/dev/null | tail -n 1) &&
        [[ -n "$line" ]]; do
        if [[ $SECONDS -ge $deadline ]]; then
            die "after ${WAIT_SECS} s, no status for $queue_id ($rcpt)$(log_tail "$SENDER")"
        fi
        sleep 0.1
    done
    wait_sessions_ended "$deadline" "sessions of $queue_id ($rcpt) still open"
    echo "$queue_id $(sed -E 's/.* status=([a-z]+) .*/\1/' <<<"$line")"
}

cmd_reload() {
    local name=$1
    shift
    load_running_lab
    [[ "$name" == "$SENDER" || "$name" == "$RECEIVER" ]] || die "no instance '$name': use $SENDER or $RECEIVER"
    local conf="$LAB_DIR/$name/conf" log="$LAB_DIR/$name/maillog" setting out
    for setting in "$@"; do
        if [[ "${setting%%=*}" == */* ]]; then
            out=$(postconf -c "$conf" -P "$setting" 2>&1) || die "postconf -P '$setting' failed: $out"
        else
            out=$(postconf -c "$conf" -e "$setting" 2>&1) || die "postconf -e '$setting' failed: $out"
        fi
    done
    # The daemons that run now were started with the old configuration.
    local old_pids master
    master=$(master_pid "$name")
    old_pids=$(instance_pids "$name" | grep -v -x "$master" || true)
    local n_reloads
    n_reloads=$(count_lines "$log" '/master\[[0-9]+\]: reload ')
    touch -d '-1 minute' "$conf"/*
    out=$(postfix -c "$conf" reload 2>&1) || die "postfix reload of $name failed: $out$(log_tail "$name")"
    local deadline=$((SECONDS + WAIT_SECS)) pid busy
    while :; do
        busy=""
        [[ $(count_lines "$log" '/master\[[0-9]+\]: reload ') -gt $n_reloads ]] || busy="no reload line yet"
        for pid in $old_pids; do
            [[ -d "/proc/$pid" && "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$LAB_DIR/$name/queue" ]] &&
                busy+=" old daemon $pid still runs"
        done
        [[ -z "$busy" ]] && break
        if [[ $SECONDS -ge $deadline ]]; then
            die "after ${WAIT_SECS} s, the reload of $name has not finished: $busy$(log_tail "$name")"
        fi
        sleep 0.1
    done
    echo "postfix-lab.sh: reloaded $name"
}

cmd_down() {
    # `down` needs no tools beyond the shell, so that it always cleans up.
    stop_instances "$SENDER" "$RECEIVER"
    echo "postfix-lab.sh: lab in $LAB_DIR is down"
}

[[ $# -ge 2 ]] || usage
command=$1
case "$command" in
    send-one) [[ $# -eq 3 ]] || usage ;;
    reload) [[ $# -ge 3 ]] || usage ;;
    *) [[ $# -eq 2 ]] || usage ;;
esac
[[ -n "$2" ]] || usage
# Postfix parameters cannot hold paths with white space.
[[ "$2" != *[[:space:]]* ]] || die "the lab folder must not contain white space: '$2'"
if [[ "$command" == up ]]; then
    mkdir -p "$2"
elif [[ "$command" == down && ! -e "$2" ]]; then
    echo "postfix-lab.sh: $2 does not exist; nothing to stop"
    exit 0
fi
[[ -d "$2" ]] || die "$2 is not a folder"
# Postfix needs absolute paths; -P resolves symbolic links, so that the
# master's working directory matches the queue path that `down` looks for.
LAB_DIR=$(cd "$2" && pwd -P)

case "$command" in
    up) cmd_up ;;
    send) cmd_send ;;
    send-one) cmd_send_one "$3" ;;
    reload) cmd_reload "${@:3}" ;;
    down) cmd_down ;;
    *) usage ;;
esac
