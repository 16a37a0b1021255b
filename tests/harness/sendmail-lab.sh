#!/usr/bin/env bash
# sendmail-lab.sh: runs two private Sendmail daemons (Debian's sendmail-bin, unpacked privately)
# and two scripted SMTP receivers on loopback, so that tests can parse real Sendmail logs.
#
# Usage:
#   tests/harness/sendmail-lab.sh up DIR     create the CA, configs and syslog; start everything
#   tests/harness/sendmail-lab.sh send DIR   inject the test messages with swaks and wait until
#                                            the relay has logged a final status for each
#   tests/harness/sendmail-lab.sh milter-up DIR
#                                            instead of `up`: the CA, the syslog and one daemon,
#                                            "milter", with INPUT_MAIL_FILTER (see below)
#   tests/harness/sendmail-lab.sh down DIR   stop everything this lab started (by pid file);
#                                            DIR is left for inspection
#
# Environment: SENDMAIL_LAB_PORT (default 21725): the relay listens on it, the receivers on the
# next port; with milter-up, the milter daemon listens on it. SENDMAIL_LAB_MILTER (milter-up
# only, required): the filter's socket in Sendmail's syntax, e.g. inet:12345@127.0.0.1. PKGS
# (default .ci-work/pkgs under the repository): where tests/harness/unpack.sh unpacked
# sendmail-bin and sendmail-cf. Run tests/harness/install-deps.sh sendmail ingest first
# (sendmail's libraries, m4, rsyslog, swaks, openssl). Everything runs as root.
#
# Syslog: Sendmail logs with syslog(3) to /dev/log, which this machine may not have and which
# belongs to the host. Each daemon therefore runs in a private mount namespace (unshare --mount)
# whose /dev is a tmpfs holding bind mounts of null, zero, random, urandom and a /dev/log symlink
# to DIR/dev-log (and whose /etc/hosts is DIR/hosts), the imuxsock socket of a private rsyslogd (own config, pid file and work
# folder; no system socket, no imklog) that writes DIR/maillog in the traditional file format.
#
# Hosts (all in 127.0.8.0/24, so they never meet the Postfix lab's 127.0.0.x endpoints):
#   127.0.8.1 PORT    "relay" Sendmail (sm-mta-relay): swaks injects here, with and without
#                     STARTTLS; it relays every message to the domain literal of its recipient
#                     on PORT+1 (ESMTP_MAILER_ARGS), presenting its CA-signed client certificate
#   127.0.8.2 PORT+1  "final" Sendmail (sm-mta-final): STARTTLS with a CA-signed certificate,
#                     asks clients for theirs; DeliveryMode=queue, so it only receives
#   127.0.8.3 PORT+1  scripted receiver "broken": offers STARTTLS, answers 220, then sends
#                     garbage instead of a TLS handshake; accepts mail in plaintext
#   127.0.8.4 PORT+1  scripted receiver "plain": no STARTTLS offered; accepts mail
#   127.0.8.5 PORT+1  scripted receiver "selfsigned": STARTTLS with a self-signed certificate
#                     (Python's ssl module), so the relay logs verify=FAIL; accepts mail
# The relay connects from 127.0.8.1 (ClientPortOptions); swaks from 127.0.0.1.
#
# milter-up starts, on its own address (so it can run beside `up`):
#   127.0.8.10 PORT   "milter" Sendmail (sm-mta-milter): STARTTLS with a CA-signed certificate,
#                     asks clients for theirs; every message goes through the filter
#                     INPUT_MAIL_FILTER(`tlsledger', `S=SENDMAIL_LAB_MILTER, F=, T=C:10s;S:10s;R:10s;E:30s')
#                     (F= empty: without the filter, mail goes on unfiltered) and the cf's default
#                     macro lists (the milter requests its own); it delivers locally, each message a file in
#                     DIR/milter/mail/new/ written by DIR/milter/deliver.sh (the local mailer).
#
# Layout of DIR: ca/ (CA and certificates), relay/, final/ and milter/ (sendmail.mc, sendmail.cf, queue,
# pid file), receivers/ (script, pids, transcripts), rsyslog/ (config, pid, work), maillog,
# send/ (swaks transcripts), lab.env.
set -euo pipefail

readonly HERE=$(cd "$(dirname "$0")" && pwd)
readonly REPO=$(cd "$HERE/../.." && pwd)
readonly PORT=${SENDMAIL_LAB_PORT:-21725}
readonly RECEIVER_PORT=$((PORT + 1))
readonly PKGS=${PKGS:-$REPO/.ci-work/pkgs}
readonly SENDMAIL=$PKGS/sendmail-bin/usr/libexec/sendmail/sendmail
readonly CF_DIR=$PKGS/sendmail-cf/usr/share/sendmail/cf
readonly RELAY_ADDR=127.0.8.1 FINAL_ADDR=127.0.8.2 BROKEN_ADDR=127.0.8.3 PLAIN_ADDR=127.0.8.4 SELFSIGNED_ADDR=127.0.8.5
readonly MILTER_ADDR=127.0.8.10
readonly MILTER_SOCKET=${SENDMAIL_LAB_MILTER:-}
readonly WAIT_SECS=90

die() {
    echo "sendmail-lab.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,20p' "$0" >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
command=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)

# Waits until `$1` (a shell condition) holds, polling, for at most WAIT_SECS.
wait_until() {
    local what=$1 condition=$2 deadline=$((SECONDS + WAIT_SECS))
    until eval "$condition"; do
        if ((SECONDS >= deadline)); then
            die "timed out after ${WAIT_SECS}s waiting for $what"
        fi
        sleep 0.2
    done
}

# True unless something listens on ADDR:PORT (asked of the kernel: a probe connection would
# show up in the daemons' logs as a session).
port_free() {
    [[ -z $(ss -Hltn "src $1:$2" 2>/dev/null) ]]
}

make_ca() {
    mkdir -p "$DIR/ca"
    cd "$DIR/ca"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
        -subj "/CN=tlsledger sendmail lab CA" 2>/dev/null
    for host in relay final milter; do
        local addr=$RELAY_ADDR
        [[ $host == final ]] && addr=$FINAL_ADDR
        [[ $host == milter ]] && addr=$MILTER_ADDR
        openssl req -new -newkey rsa:2048 -nodes -keyout "$host.key" -out "$host.csr" \
            -subj "/CN=$host.sendmail-lab.example" 2>/dev/null
        printf 'subjectAltName=DNS:%s.sendmail-lab.example,IP:%s\nextendedKeyUsage=serverAuth,clientAuth\n' \
            "$host" "$addr" >"$host.ext"
        openssl x509 -req -in "$host.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile "$host.ext" -out "$host.pem" 2>/dev/null
    done
    # The self-signed receiver's certificate, from no CA.
    openssl req -x509 -newkey rsa:2048 -nodes -keyout selfsigned.key -out selfsigned.pem -days 3650 \
        -subj "/CN=selfsigned.sendmail-lab.example" 2>/dev/null
    # A client certificate for swaks, from the same CA.
    openssl req -new -newkey rsa:2048 -nodes -keyout client.key -out client.csr \
        -subj "/CN=client.sendmail-lab.example" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile client.ext -out client.pem 2>/dev/null
    # Sendmail's CACertPath is a hashed folder.
    mkdir -p certs
    cp ca.pem "certs/$(openssl x509 -hash -noout -in ca.pem).0"
    chmod 0600 ./*.key
    cd - >/dev/null
}

# write_mc NAME LISTEN_ADDR: the m4 source of one daemon's sendmail.cf.
write_mc() {
    local name=$1 addr=$2 dir=$DIR/$1
    local delivery=background client_options="Addr=$RELAY_ADDR" port=$PORT extra=""
    [[ $name == final ]] && delivery=queue && client_options="Addr=$FINAL_ADDR" && port=$RECEIVER_PORT
    if [[ $name == milter ]]; then
        client_options="Addr=$MILTER_ADDR"
        extra=$(milter_mc "$dir")
    fi
    mkdir -p "$dir/mqueue"
    chmod 0700 "$dir/mqueue"
    cat >"$dir/sendmail.mc" <<EOF
divert(-1)
# Written by tests/harness/sendmail-lab.sh for the $name daemon.
divert(0)dnl
VERSIONID(\`tlsledger sendmail lab $name')dnl
OSTYPE(\`linux')dnl
define(\`confDOMAIN_NAME', \`$name.sendmail-lab.example')dnl
define(\`confDONT_PROBE_INTERFACES', \`True')dnl
define(\`confLOG_LEVEL', \`9')dnl
define(\`QUEUE_DIR', \`$dir/mqueue')dnl
define(\`confPID_FILE', \`$dir/sendmail.pid')dnl
define(\`STATUS_FILE', \`$dir/statistics')dnl
define(\`ALIAS_FILE', \`')dnl
define(\`HELP_FILE', \`')dnl
define(\`confSERVICE_SWITCH_FILE', \`$DIR/service.switch')dnl
define(\`confHOSTS_FILE', \`$DIR/hosts')dnl
define(\`confCACERT_PATH', \`$DIR/ca/certs')dnl
define(\`confCACERT', \`$DIR/ca/ca.pem')dnl
define(\`confSERVER_CERT', \`$DIR/ca/$name.pem')dnl
define(\`confSERVER_KEY', \`$DIR/ca/$name.key')dnl
define(\`confCLIENT_CERT', \`$DIR/ca/$name.pem')dnl
define(\`confCLIENT_KEY', \`$DIR/ca/$name.key')dnl
define(\`confDELIVERY_MODE', \`$delivery')dnl
define(\`confCLIENT_OPTIONS', \`$client_options')dnl
dnl The machine is shared with builds: never queue or refuse mail because of the load average.
define(\`confQUEUE_LA', \`10000')dnl
define(\`confREFUSE_LA', \`10000')dnl
define(\`confDELAY_LA', \`0')dnl
define(\`confTO_CONNECT', \`10s')dnl
define(\`confTO_INITIAL', \`10s')dnl
define(\`confTO_STARTTLS', \`10s')dnl
define(\`confTO_ICONNECT', \`10s')dnl
define(\`ESMTP_MAILER_ARGS', \`TCP \$h $RECEIVER_PORT')dnl
define(\`SMTP_MAILER_ARGS', \`TCP \$h $RECEIVER_PORT')dnl
define(\`RELAY_MAILER_ARGS', \`TCP \$h $RECEIVER_PORT')dnl
FEATURE(\`no_default_msa')dnl
FEATURE(\`promiscuous_relay')dnl
FEATURE(\`nocanonify')dnl
FEATURE(\`accept_unresolvable_domains')dnl
FEATURE(\`accept_unqualified_senders')dnl
DAEMON_OPTIONS(\`Port=$port, Addr=$addr, Name=MTA')dnl
$extra
MAILER(\`local')dnl
MAILER(\`smtp')dnl
EOF
    m4 -D_CF_DIR_="$CF_DIR/" "$CF_DIR/m4/cf.m4" "$dir/sendmail.mc" >"$dir/sendmail.cf" 2>"$dir/m4.stderr" ||
        die "m4 failed for $name: $(cat "$dir/m4.stderr")"
}

# milter_mc DIR: the milter daemon's additions to its sendmail.mc, and its local mailer: a
# script that writes each message into DIR/mail/tmp and renames it into DIR/mail/new, so that a
# file in new/ is always whole. The mailer runs as root (S, from local_procmail's flags) and
# takes any local part (no w: no passwd lookup; no A: no alias database).
milter_mc() {
    local dir=$1
    mkdir -p "$dir/mail/tmp" "$dir/mail/new"
    cat >"$dir/deliver.sh" <<EOF
#!/bin/sh
# The local mailer of the sendmail-lab.sh milter daemon: deliver.sh [-f SENDER] USER < MESSAGE.
set -e
tmp=\$(mktemp "$dir/mail/tmp/msg.XXXXXX")
cat >"\$tmp"
mv "\$tmp" "$dir/mail/new/"
EOF
    chmod 0755 "$dir/deliver.sh"
    # No confMILTER_MACROS_*: the cf defaults lack {verify}, {alg_bits} and v, but the milter
    # asks for its own lists when it negotiates (SMFIF_SETSYMLIST) and Sendmail 8.17 sends those;
    # the test proves it, so it also proves the README's minimal INPUT_MAIL_FILTER line suffices.
    cat <<EOF
define(\`LOCAL_MAILER_PATH', \`$dir/deliver.sh')dnl
define(\`LOCAL_MAILER_ARGS', \`deliver.sh \$u')dnl
MODIFY_MAILER_FLAGS(\`LOCAL', \`-wA')dnl
INPUT_MAIL_FILTER(\`tlsledger', \`S=$MILTER_SOCKET, F=, T=C:10s;S:10s;R:10s;E:30s')dnl
EOF
}

# The private /dev and the daemon, in a mount namespace of their own (see the header). The
# daemon runs in the foreground (-bD) as the namespace's first process, so its pid is ours.
start_sendmail() {
    local name=$1
    local dir=$DIR/$name
    mkdir -p "$dir/hostdev"
    # shellcheck disable=SC2016 # expanded by the inner shell
    unshare --mount --propagation private -- bash -c '
        set -e
        dir=$1; sock=$2; hosts=$3; shift 3
        mount --rbind /dev "$dir/hostdev"
        mount -t tmpfs -o mode=0755 tmpfs /dev
        for node in null zero random urandom full tty; do
            if [ -e "$dir/hostdev/$node" ]; then
                : >"/dev/$node"
                mount --bind "$dir/hostdev/$node" "/dev/$node"
            fi
        done
        ln -s "$sock" /dev/log
        umount -l "$dir/hostdev"
        # Sendmail qualifies the machine name with gethostbyname() at start and sleeps a minute
        # when it cannot: the lab hosts file names it.
        mount --bind "$hosts" /etc/hosts
        exec "$@"
    ' bash "$dir" "$DIR/dev-log" "$DIR/hosts" "$SENDMAIL" -bD -L "sm-mta-$name" -C "$dir/sendmail.cf" \
        </dev/null >"$dir/stdout" 2>"$dir/stderr" &
    echo $! >"$dir/daemon.pid"
}

write_receiver_script() {
    mkdir -p "$DIR/receivers"
    cat >"$DIR/receivers/receiver.py" <<'EOF'
"""A scripted SMTP receiver for sendmail-lab.sh: "plain" offers no STARTTLS; "broken" offers it,
answers 220 and then sends garbage instead of a handshake; "selfsigned" does STARTTLS with the
certificate and key given after the transcript path. All accept mail."""
import socketserver
import ssl
import sys

MODE, ADDR, PORT, TRANSCRIPT = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
TLS = None
if MODE == "selfsigned":
    TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    TLS.load_cert_chain(sys.argv[5], sys.argv[6])


class Session(socketserver.StreamRequestHandler):
    timeout = 30

    def say(self, line):
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        with open(TRANSCRIPT, "a") as log:
            log.write("connect\n")
            self.say(f"220 {MODE}.sendmail-lab.example ESMTP scripted")
            in_data = False
            while True:
                raw = self.rfile.readline()
                if not raw:
                    return
                line = raw.decode("latin-1").rstrip("\r\n")
                if in_data:
                    if line == ".":
                        in_data = False
                        self.say("250 2.0.0 queued")
                    continue
                log.write(f"C: {line}\n")
                verb = line[:4].upper()
                if verb == "EHLO":
                    self.say(f"250-{MODE}.sendmail-lab.example")
                    if MODE in ("broken", "selfsigned") and not isinstance(self.connection, ssl.SSLSocket):
                        self.say("250-STARTTLS")
                    self.say("250 8BITMIME")
                elif verb == "HELO":
                    self.say(f"250 {MODE}.sendmail-lab.example")
                elif verb == "STAR" and MODE == "broken":
                    self.say("220 2.0.0 go ahead")
                    self.wfile.write(b"this is not a TLS server hello\r\n" * 4)
                    self.wfile.flush()
                    return
                elif verb == "STAR" and TLS is not None:
                    self.say("220 2.0.0 go ahead")
                    self.connection = TLS.wrap_socket(self.connection, server_side=True)
                    self.rfile = self.connection.makefile("rb")
                    self.wfile = self.connection.makefile("wb")
                elif verb == "DATA":
                    in_data = True
                    self.say("354 go ahead")
                elif verb == "QUIT":
                    self.say("221 2.0.0 bye")
                    return
                elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                    self.say("250 2.0.0 ok")
                else:
                    self.say("502 5.5.2 not implemented")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


Server((ADDR, PORT), Session).serve_forever()
EOF
}

start_receiver() {
    local mode=$1 addr=$2
    python3 "$DIR/receivers/receiver.py" "$mode" "$addr" "$RECEIVER_PORT" "$DIR/receivers/$mode.transcript" \
        "$DIR/ca/selfsigned.pem" "$DIR/ca/selfsigned.key" \
        </dev/null >"$DIR/receivers/$mode.stdout" 2>&1 &
    echo $! >"$DIR/receivers/$mode.pid"
}

start_rsyslog() {
    mkdir -p "$DIR/rsyslog/work"
    cat >"$DIR/rsyslog/rsyslog.conf" <<EOF
global(workDirectory="$DIR/rsyslog/work")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="$DIR/dev-log" CreatePath="on" HostName="sendmail-lab")
action(type="omfile" file="$DIR/maillog" template="RSYSLOG_TraditionalFileFormat")
EOF
    rsyslogd -N1 -f "$DIR/rsyslog/rsyslog.conf" >/dev/null 2>&1 || die "rsyslog.conf is invalid"
    rsyslogd -n -f "$DIR/rsyslog/rsyslog.conf" -i "$DIR/rsyslog/rsyslogd.pid" \
        </dev/null >/dev/null 2>"$DIR/rsyslog/stderr" &
    echo $! >"$DIR/rsyslog/daemon.pid"
}

up() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (Sendmail daemons and mount namespaces)"
    [[ -x $SENDMAIL ]] || die "$SENDMAIL missing: run tests/harness/unpack.sh sendmail-bin $PKGS/sendmail-bin"
    [[ -f $CF_DIR/m4/cf.m4 ]] || die "$CF_DIR missing: run tests/harness/unpack.sh sendmail-cf $PKGS/sendmail-cf"
    for tool in openssl swaks rsyslogd unshare python3 m4 ss; do
        command -v "$tool" >/dev/null || die "$tool is not installed: run tests/harness/install-deps.sh sendmail ingest"
    done
    for endpoint in "$RELAY_ADDR $PORT" "$FINAL_ADDR $RECEIVER_PORT" "$BROKEN_ADDR $RECEIVER_PORT" "$PLAIN_ADDR $RECEIVER_PORT" "$SELFSIGNED_ADDR $RECEIVER_PORT"; do
        # shellcheck disable=SC2086 # two words on purpose
        port_free $endpoint || die "port ${endpoint/ /:} is in use"
    done
    make_ca
    printf 'hosts files\naliases files\n' >"$DIR/service.switch"
    # The machine's own name first, qualified (see start_sendmail).
    printf '127.0.0.1 %s.sendmail-lab.example %s localhost\n%s relay.sendmail-lab.example\n%s final.sendmail-lab.example\n' \
        "$(hostname)" "$(hostname)" "$RELAY_ADDR" "$FINAL_ADDR" >"$DIR/hosts"
    write_mc relay "$RELAY_ADDR"
    write_mc final "$FINAL_ADDR"
    start_rsyslog
    wait_until "rsyslog's socket $DIR/dev-log" "[[ -S '$DIR/dev-log' ]]"
    write_receiver_script
    start_receiver broken "$BROKEN_ADDR"
    start_receiver plain "$PLAIN_ADDR"
    start_receiver selfsigned "$SELFSIGNED_ADDR"
    start_sendmail final
    start_sendmail relay
    wait_until "the final daemon on $FINAL_ADDR:$RECEIVER_PORT" "! port_free $FINAL_ADDR $RECEIVER_PORT"
    wait_until "the relay daemon on $RELAY_ADDR:$PORT" "! port_free $RELAY_ADDR $PORT"
    wait_until "the scripted receivers" "! port_free $BROKEN_ADDR $RECEIVER_PORT && ! port_free $PLAIN_ADDR $RECEIVER_PORT \
        && ! port_free $SELFSIGNED_ADDR $RECEIVER_PORT"
    wait_until "the daemons' first log lines" "grep -q 'sm-mta-relay.*starting daemon' '$DIR/maillog' 2>/dev/null"
    cat >"$DIR/lab.env" <<EOF
PORT=$PORT
RECEIVER_PORT=$RECEIVER_PORT
RELAY_ADDR=$RELAY_ADDR
FINAL_ADDR=$FINAL_ADDR
BROKEN_ADDR=$BROKEN_ADDR
PLAIN_ADDR=$PLAIN_ADDR
SELFSIGNED_ADDR=$SELFSIGNED_ADDR
MAILLOG=$DIR/maillog
EOF
    echo "sendmail-lab.sh: up (relay $RELAY_ADDR:$PORT, log $DIR/maillog)"
}

# The milter daemon alone (see the header), beside the CA and the private syslog.
milter_up() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (Sendmail daemons and mount namespaces)"
    [[ -x $SENDMAIL ]] || die "$SENDMAIL missing: run tests/harness/unpack.sh sendmail-bin $PKGS/sendmail-bin"
    [[ -f $CF_DIR/m4/cf.m4 ]] || die "$CF_DIR missing: run tests/harness/unpack.sh sendmail-cf $PKGS/sendmail-cf"
    [[ $MILTER_SOCKET =~ ^(inet:[0-9]+@[0-9.]+|unix:/.+)$ ]] ||
        die "SENDMAIL_LAB_MILTER must be inet:PORT@ADDRESS or unix:PATH, not '$MILTER_SOCKET'"
    for tool in openssl rsyslogd unshare m4 ss; do
        command -v "$tool" >/dev/null || die "$tool is not installed: run tests/harness/install-deps.sh sendmail ingest"
    done
    port_free "$MILTER_ADDR" "$PORT" || die "port $MILTER_ADDR:$PORT is in use"
    make_ca
    printf 'hosts files\naliases files\n' >"$DIR/service.switch"
    printf '127.0.0.1 %s.sendmail-lab.example %s localhost\n%s milter.sendmail-lab.example\n' \
        "$(hostname)" "$(hostname)" "$MILTER_ADDR" >"$DIR/hosts"
    write_mc milter "$MILTER_ADDR"
    start_rsyslog
    wait_until "rsyslog's socket $DIR/dev-log" "[[ -S '$DIR/dev-log' ]]"
    start_sendmail milter
    wait_until "the milter daemon on $MILTER_ADDR:$PORT" "! port_free $MILTER_ADDR $PORT"
    wait_until "the daemon's first log lines" "grep -q 'sm-mta-milter.*starting daemon' '$DIR/maillog' 2>/dev/null"
    cat >"$DIR/lab.env" <<EOF
PORT=$PORT
MILTER_ADDR=$MILTER_ADDR
MILTER_SOCKET=$MILTER_SOCKET
MAILDIR=$DIR/milter/mail
CLIENT_CERT=$DIR/ca/client.pem
CLIENT_KEY=$DIR/ca/client.key
SELFSIGNED_CERT=$DIR/ca/selfsigned.pem
SELFSIGNED_KEY=$DIR/ca/selfsigned.key
MAILLOG=$DIR/maillog
EOF
    echo "sendmail-lab.sh: milter daemon up ($MILTER_ADDR:$PORT, filter $MILTER_SOCKET, log $DIR/maillog)"
}

# swaks_to NAME RCPT... [-- SWAKS-ARGS...]: one message from 127.0.0.1 to the relay.
swaks_to() {
    local name=$1
    shift
    local rcpts=() extra=()
    while [[ $# -gt 0 && $1 != -- ]]; do
        rcpts+=("$1")
        shift
    done
    [[ $# -gt 0 ]] && shift && extra=("$@")
    local IFS=,
    swaks --server "$RELAY_ADDR" --port "$PORT" --from "sender@client.sendmail-lab.example" \
        --to "${rcpts[*]}" --helo client.sendmail-lab.example --header "Subject: $name" \
        "${extra[@]}" >"$DIR/send/$name.swaks" 2>&1 || die "swaks $name failed: see $DIR/send/$name.swaks"
}

send() {
    mkdir -p "$DIR/send"
    # 1. Inbound STARTTLS without a client certificate; relayed to the final Sendmail over TLS.
    swaks_to tls-to-final "alice@[$FINAL_ADDR]" -- --tls
    # 2. Inbound plaintext; relayed to the plain receiver (no STARTTLS offered).
    swaks_to plain-to-plain "bob@[$PLAIN_ADDR]"
    # 3. Inbound STARTTLS with a CA-signed client certificate; relayed to the broken receiver.
    swaks_to cert-to-broken "carol@[$BROKEN_ADDR]" -- --tls --tls-cert "$DIR/ca/client.pem" --tls-key "$DIR/ca/client.key"
    # 4. STARTTLS with a self-signed client certificate (the relay logs verify=FAIL), relayed to
    #    the receiver with a self-signed certificate (verify=FAIL again, on the client side).
    swaks_to selfsigned-to-selfsigned "dora@[$SELFSIGNED_ADDR]" -- --tls \
        --tls-cert "$DIR/ca/selfsigned.pem" --tls-key "$DIR/ca/selfsigned.key"
    # 5. Forty recipients: the relay's `to=` line is longer than sm_syslog()'s buffer and is split.
    local many=()
    for idx in $(seq -w 1 40); do
        many+=("recipient-with-a-long-local-part-$idx@[$FINAL_ADDR]")
    done
    swaks_to split-to-final "${many[@]}" -- --tls
    wait_until "the relay's delivery lines for the five messages" \
        "grep -q 'bob@\[$PLAIN_ADDR\].*stat=' '$DIR/maillog' && grep -q 'alice@\[$FINAL_ADDR\].*stat=' '$DIR/maillog' \
         && grep -q 'dora@\[$SELFSIGNED_ADDR\].*stat=' '$DIR/maillog' \
         && grep -q 'carol@\[$BROKEN_ADDR\].*stat=' '$DIR/maillog' \
         && grep -q 'sm-mta-relay.*\[[0-9]*\]: .*recipient-with-a-long-local-part-40@\[$FINAL_ADDR\]' '$DIR/maillog' \
         && [[ \$(grep -c 'sm-mta-final.*from=<sender@client.sendmail-lab.example>' '$DIR/maillog') -ge 2 ]]"
    echo "sendmail-lab.sh: sent"
}

stop_pid_file() {
    local file=$1
    [[ -f $file ]] || return 0
    local pid
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 10))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

down() {
    # The daemons (and their children), the receivers, then rsyslogd: each by its pid file.
    for name in relay final milter; do
        local file=$DIR/$name/daemon.pid children=""
        if [[ -f $file ]]; then
            # Its delivery and session processes, by parent pid, so none outlives the lab.
            children=$(pgrep -P "$(cat "$file")" 2>/dev/null || true)
        fi
        stop_pid_file "$file"
        for pid in $children; do
            kill -KILL "$pid" 2>/dev/null || true
        done
    done
    stop_pid_file "$DIR/receivers/broken.pid"
    stop_pid_file "$DIR/receivers/plain.pid"
    stop_pid_file "$DIR/receivers/selfsigned.pid"
    stop_pid_file "$DIR/rsyslog/daemon.pid"
    echo "sendmail-lab.sh: down"
}

case "$command" in
    up) up ;;
    milter-up) milter_up ;;
    send) send ;;
    down) down ;;
    *) usage ;;
esac
