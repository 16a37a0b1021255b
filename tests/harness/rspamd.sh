#!/usr/bin/env bash
# rspamd.sh: installs Debian's rspamd and runs private instances of it on loopback for the
# tests of the rspamd feeds (src/feeds/rspamd.rs).
#
# Usage:
#   tests/harness/rspamd.sh install        install rspamd (and curl) if missing; no apt at all
#                                          when installed; the system service is never started
#   tests/harness/rspamd.sh start DIR      write DIR's config, start rspamd, wait until the
#                                          controller and the normal worker answer /ping,
#                                          print the ports ("normal 127.0.0.1:P" and
#                                          "controller 127.0.0.1:P"); does nothing if it runs
#   tests/harness/rspamd.sh stop DIR       SIGTERM, then SIGKILL after RSPAMD_STOP_TIMEOUT;
#                                          never fails
#   tests/harness/rspamd.sh status DIR     exit 0 if DIR's rspamd runs and answers /ping, and
#                                          print its ports
#
# Environment (read by start; the values in use are written to DIR/rspamd.env):
#   RSPAMD_PORT_BASE       normal worker on 127.0.0.1:BASE, controller on BASE+1 (default 15300);
#                          BASE+2 and BASE+3 are the disabled proxy and fuzzy workers' (never
#                          bound), BASE+4 rspamd's DNS server (nothing listens there; see below)
#   RSPAMD_HS_CACHE_DIR    where rspamd keeps its compiled hyperscan databases (default DIR/db);
#                          a folder shared between instances saves 15-30 s of compiling on every
#                          start after the first (the ~10k public suffixes and the regexp rules)
#   RSPAMD_START_TIMEOUT   seconds to wait for /ping on the controller and the normal worker
#                          (default 120: a first start compiles the hyperscan databases)
#   RSPAMD_STOP_TIMEOUT    seconds between SIGTERM and SIGKILL (default 10)
#   RSPAMD_LOG_LEVEL       rspamd log level (default info, the stock one)
#   RSPAMD_BIN             the rspamd binary (default: rspamd from PATH or /usr/bin)
#
# Layout of DIR:
#   DIR/maps/tlsledger_downgrade.map   the tlsledger maps the test writes (created empty if
#   DIR/maps/tlsledger_hist_tls.map    missing; rspamd re-reads them when they change)
#   DIR/etc/                           the private configuration (rewritten at every start):
#     rspamd.conf                      includes the stock /etc/rspamd/rspamd.conf, with
#     local.d/, override.d/            LOCAL_CONFDIR pointing here instead of /etc/rspamd
#   DIR/rspamd.env                     RSPAMD_PORT_BASE, RSPAMD_NORMAL, RSPAMD_CONTROLLER
#                                      (host:port for rspamc -h)
#   DIR/rspamd.pid                     the main process's pid while it runs
#   DIR/db/                            rspamd's DBDIR (hyperscan cache, stats, history)
#   DIR/run/                           RUNDIR (empty: rspamd -f writes no pid file)
#   DIR/log/rspamd.log, stdout.log
#
# What this rspamd has and has not:
#   * only the normal worker (scans, port BASE) and the controller (port BASE+1, /ping,
#     rspamc stat/symbols over HTTP); the proxy and fuzzy workers are disabled, and every
#     socket is on 127.0.0.1;
#   * no redis: none is configured, so the modules that need it disable themselves and the
#     Bayes classifier (stock backend redis) logs "cannot init redis backend" and stays idle;
#     rspamd starts and scans all the same;
#   * nothing leaves loopback: rspamd's own resolver, which every DNS lookup (RBL, SPF, DMARC,
#     ASN, the https:// maps of the stock configuration) goes through, is given the nameserver
#     127.0.0.1:BASE+4 where nothing listens, so lookups fail fast ("query timed out" in the
#     log and in *_FAIL symbols, a scan takes ~0.5 s); fuzzy_check, whose servers libc would
#     resolve through the system's resolver, is disabled;
#   * the multimap rules TLSLEDGER_DOWNGRADE_SUSPECT (score 3.0 x the weight in the map) and
#     TLSLEDGER_HIST_TLS (score 0), exactly as an operator would write them (see the
#     comments in write_config);
#   * as root, rspamd runs as root (`-u root -g root --insecure`: it refuses root workers
#     otherwise), so that it can read and write DIR wherever it is (the stock _rspamd user
#     cannot enter a 0700 folder of root's); as another user, it runs as that user.
# rspamd runs in the foreground (-f) in its own session (setsid), so only stop ends it;
# concurrent calls for one DIR take turns (flock on DIR/.rspamd.sh.lock). stop signals only
# the pid in DIR/rspamd.pid, and only while that process runs the rspamd binary with DIR as
# its working folder (rspamd rewrites its command line to "rspamd: main process").
set -euo pipefail

readonly PROG=rspamd.sh

die() {
    echo "$PROG: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 install | start|stop|status DIR" >&2
    exit 2
}

now_ms() {
    date +%s%3N
}

# ---------------------------------------------------------------------------
# install

is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

rspamd_version() {
    dpkg-query -W -f='rspamd ${Version}' rspamd 2>/dev/null || echo "rspamd not installed"
}

cmd_install() {
    # install-deps.sh is the one place that installs packages (policy-rc.d, apt-get update only
    # when needed, one retry).
    bash "$(dirname "${BASH_SOURCE[0]}")/install-deps.sh" rspamd
    echo "$PROG: installed ($(rspamd_version))"
}

# ---------------------------------------------------------------------------
# instance helpers

set_dir() {
    [[ $# -eq 1 && -n "$1" ]] || usage
    if [[ "$COMMAND" == start ]]; then
        mkdir -p "$1"
    fi
    DIR=$(realpath -m "$1")
    PID_FILE="$DIR/rspamd.pid"
    ETC="$DIR/etc"
    CONFIG="$ETC/rspamd.conf"
    LOG_DIR="$DIR/log"
    # Concurrent start/stop calls for one DIR take turns. rspamd must not inherit this
    # descriptor (see cmd_start).
    if [[ -d "$DIR" && "$COMMAND" != status && -z "${LOCKED:-}" ]]; then
        exec 9>"$DIR/.rspamd.sh.lock"
        flock 9
        LOCKED=1
    fi
}

check_port() {
    [[ "$1" =~ ^[0-9]+$ && "$1" -ge 1024 && "$1" -le 65530 ]] ||
        die "bad RSPAMD_PORT_BASE '$1' (1024-65530; the instance uses BASE..BASE+4)"
}

# Loads the ports of the instance: the ones it was started with (DIR/rspamd.env) when it
# runs, otherwise the environment or the default.
load_ports() {
    local env_base=${RSPAMD_PORT_BASE:-}
    if [[ "${1:-}" == "saved" && -r "$DIR/rspamd.env" ]]; then
        # shellcheck disable=SC1091
        source "$DIR/rspamd.env"
    else
        RSPAMD_PORT_BASE=${env_base:-15300}
    fi
    check_port "$RSPAMD_PORT_BASE"
    NORMAL_PORT=$RSPAMD_PORT_BASE
    CONTROLLER_PORT=$((RSPAMD_PORT_BASE + 1))
    PROXY_PORT=$((RSPAMD_PORT_BASE + 2))  # the proxy is disabled: never bound
    FUZZY_PORT=$((RSPAMD_PORT_BASE + 3))  # the fuzzy storage is disabled: never bound
    DNS_PORT=$((RSPAMD_PORT_BASE + 4))    # rspamd's resolver: nothing listens (see write_config)
}

# Prints the pid of DIR's rspamd main process if it is alive. rspamd rewrites its command
# line ("rspamd: main process"), so the check is: the pid file's process runs the rspamd
# binary and its working folder is DIR (cmd_start starts it there; rspamd -f does not chdir).
server_pid() {
    local pid
    [[ -r "$PID_FILE" ]] || return 1
    pid=$(tr -d ' \n' <"$PID_FILE")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == */rspamd ]] || return 1
    [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$DIR" ]] || return 1
    # A zombie is as good as gone.
    [[ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" != "Z" ]] || return 1
    echo "$pid"
}

# The pids of the processes whose parent is $1 (rspamd's workers).
children_of() {
    local stat line fields
    for stat in /proc/[0-9]*/stat; do
        read -r line <"$stat" 2>/dev/null || continue
        # "pid (comm) state ppid ...": the name may hold spaces, the fields after it do not.
        read -r -a fields <<<"${line##*) }"
        if [[ "${fields[1]:-}" == "$1" ]]; then
            stat=${stat#/proc/}
            echo "${stat%/stat}"
        fi
    done
}

# True when rspamd answers /ping on 127.0.0.1:$1 (the controller and the normal worker both do).
pings() {
    local body
    body=$(curl -s --max-time 2 "http://127.0.0.1:$1/ping" 2>/dev/null) || return 1
    [[ "$body" == pong* ]]
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Remembers how long the logs are, so that log_tail shows only this start's lines.
mark_logs() {
    local f
    LOG_MARKS=()
    for f in "$LOG_DIR/rspamd.log" "$LOG_DIR/stdout.log"; do
        LOG_MARKS+=("$(stat -c %s "$f" 2>/dev/null || echo 0)")
    done
}

log_tail() {
    local f i=0 start
    for f in "$LOG_DIR/rspamd.log" "$LOG_DIR/stdout.log"; do
        start=$((${LOG_MARKS[$i]:-0} + 1))
        i=$((i + 1))
        if [[ -s "$f" ]] && [[ $(stat -c %s "$f") -ge $start ]]; then
            echo "---- $f (last lines of this start)" >&2
            tail -c "+$start" "$f" | tail -n 30 >&2
        fi
    done
}

# UCL string contents: backslashes and double quotes escaped.
ucl_escape() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    printf '%s' "$s"
}

write_config() {
    local maps hs_cache
    mkdir -p "$ETC/local.d" "$ETC/override.d" "$DIR/maps" "$DIR/db" "$DIR/run" "$LOG_DIR"
    rm -f "$ETC"/local.d/* "$ETC"/override.d/*
    # The maps must exist when rspamd starts; a missing file map is only loaded later.
    touch "$DIR/maps/tlsledger_downgrade.map" "$DIR/maps/tlsledger_hist_tls.map"
    maps=$(ucl_escape "$DIR/maps")
    hs_cache=${RSPAMD_HS_CACHE_DIR:-$DIR/db}
    mkdir -p "$hs_cache"
    hs_cache=$(ucl_escape "$(realpath -m "$hs_cache")")

    # The stock configuration, with LOCAL_CONFDIR, DBDIR, RUNDIR and LOGDIR pointing into DIR
    # (rspamd --var, see cmd_start): its local.d/ and override.d/ includes read DIR/etc.
    cat >"$CONFIG" <<'EOF'
# Written by tests/harness/rspamd.sh start; rewritten at every start.
# The stock configuration; rspamd runs with --var LOCAL_CONFDIR=DIR/etc, so its
# local.d/ and override.d/ includes are the files beside this one.
.include "$CONFDIR/rspamd.conf"
EOF

    # The rules under test are the samples the repository ships for operators
    # (examples/rspamd/local.d/), with their /var/lib/tlsledger/feed map paths pointed at DIR/maps.
    local examples sed_maps
    examples="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../examples/rspamd/local.d" && pwd)"
    sed_maps=$(printf '%s' "$maps" | sed 's/[&|\\]/\\&/g')
    for conf in multimap.conf composites.conf; do
        sed "s|/var/lib/tlsledger/feed|$sed_maps|g" "$examples/$conf" >"$ETC/local.d/$conf"
    done

    # Loopback only: the scanner and the controller on 127.0.0.1, the proxy and the fuzzy
    # storage disabled (and pointed at loopback ports should they ever be enabled).
    cat >"$ETC/override.d/worker-normal.inc" <<EOF
bind_socket = "127.0.0.1:$NORMAL_PORT";
count = 1;
EOF
    cat >"$ETC/override.d/worker-controller.inc" <<EOF
bind_socket = "127.0.0.1:$CONTROLLER_PORT";
count = 1;
EOF
    cat >"$ETC/override.d/worker-proxy.inc" <<EOF
bind_socket = "127.0.0.1:$PROXY_PORT";
enabled = false;
EOF
    cat >"$ETC/override.d/worker-fuzzy.inc" <<EOF
bind_socket = "127.0.0.1:$FUZZY_PORT";
count = -1;
enabled = false;
EOF

    # Nothing may leave loopback. rspamd resolves every name (RBL/SPF/DMARC lookups, the
    # https:// maps of the stock configuration) with its own resolver: it gets a loopback
    # nameserver where nothing listens, so every lookup fails within 0.2 s (0.1 s, one retry)
    # and the modules log "query timed out" (the system's resolv.conf is not used). fuzzy_check is off: its
    # fuzzy1/2.rspamd.com servers would be resolved through libc (the system resolver).
    # hs_cache_dir: the compiled hyperscan databases, among them the ~10k public suffixes
    # (15-30 s to compile on two cores, about 1 s to load): RSPAMD_HS_CACHE_DIR shares them.
    cat >"$ETC/override.d/options.inc" <<EOF
filters = "chartable,dkim,regexp";
hs_cache_dir = "$hs_cache/";
dns {
  nameserver = ["127.0.0.1:$DNS_PORT"];
  timeout = 0.1s;
  retransmits = 1;
  sockets = 4;
}
EOF
    cat >"$ETC/override.d/fuzzy_check.conf" <<'EOF'
enabled = false;
EOF
    cat >"$ETC/override.d/logging.inc" <<EOF
level = "${RSPAMD_LOG_LEVEL:-info}";
EOF
    # No redis: none is configured here, so the modules that need it (greylist, ratelimit,
    # history_redis, neural, replies, url_redirector, ...) disable themselves at startup and
    # the Bayes classifier logs "cannot init redis backend" and classifies nothing.

    cat >"$DIR/rspamd.env" <<EOF
RSPAMD_PORT_BASE=$RSPAMD_PORT_BASE
RSPAMD_NORMAL=127.0.0.1:$NORMAL_PORT
RSPAMD_CONTROLLER=127.0.0.1:$CONTROLLER_PORT
EOF
}

rspamd_bin() {
    local bin=${RSPAMD_BIN:-}
    if [[ -z "$bin" ]]; then
        bin=$(PATH="$PATH:/usr/bin:/usr/sbin" command -v rspamd 2>/dev/null) ||
            die "rspamd not found; run '$0 install' first"
    fi
    [[ -x "$bin" ]] || die "$bin is not executable"
    echo "$bin"
}

print_ports() {
    echo "normal 127.0.0.1:$NORMAL_PORT"
    echo "controller 127.0.0.1:$CONTROLLER_PORT"
}

# Waits until DIR's rspamd $1 answers /ping on the controller and the normal worker; dies
# with the log tail if it exits or the timeout passes.
wait_ready() {
    local pid=$1 t0=$2 timeout=${RSPAMD_START_TIMEOUT:-120}
    local deadline=$((t0 + timeout * 1000)) rc
    while true; do
        if pings "$CONTROLLER_PORT" && pings "$NORMAL_PORT" && server_pid >/dev/null; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null || [[ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" == "Z" ]]; then
            wait "$pid" 2>/dev/null && rc=0 || rc=$?
            rm -f "$PID_FILE"
            echo "$PROG: rspamd for $DIR exited during startup (status $rc)" >&2
            log_tail
            exit 1
        fi
        if [[ $(now_ms) -ge $deadline ]]; then
            echo "$PROG: rspamd for $DIR (pid $pid) did not answer http://127.0.0.1:$CONTROLLER_PORT/ping" \
                "and http://127.0.0.1:$NORMAL_PORT/ping within ${timeout}s (RSPAMD_START_TIMEOUT)" >&2
            log_tail
            if tail -n 1 "$LOG_DIR/rspamd.log" 2>/dev/null | grep -q "TLD suffixes"; then
                echo "$PROG: (it was still compiling the public suffixes with hyperscan, 15-30 s on two" \
                    "cores without a cache: raise RSPAMD_START_TIMEOUT or share RSPAMD_HS_CACHE_DIR)" >&2
            fi
            kill_tree "$pid"
            rm -f "$PID_FILE"
            exit 1
        fi
        sleep 0.05
    done
}

# SIGKILL to $1 and its workers (which would otherwise outlive it for a while).
kill_tree() {
    local children
    mapfile -t children < <(children_of "$1")
    kill -KILL "$1" "${children[@]}" 2>/dev/null || true
}

# ---------------------------------------------------------------------------
# commands

cmd_start() {
    set_dir "$@"
    command -v curl >/dev/null || die "curl not found; run '$0 install' first"
    local pid t0 bin port
    t0=$(now_ms)
    if pid=$(server_pid); then
        load_ports saved
        wait_ready "$pid" "$t0"
        echo "$PROG: already running for $DIR (pid $pid)" >&2
        print_ports
        return 0
    fi
    load_ports
    for port in "$NORMAL_PORT" "$CONTROLLER_PORT"; do
        if port_busy "$port"; then
            die "127.0.0.1:$port is already in use by another process; choose another RSPAMD_PORT_BASE"
        fi
    done
    bin=$(rspamd_bin)
    RSPAMD_VARS=("--var=LOCAL_CONFDIR=$ETC" "--var=DBDIR=$DIR/db" "--var=RUNDIR=$DIR/run" "--var=LOGDIR=$LOG_DIR")
    write_config
    mark_logs
    rm -f "$PID_FILE"
    local user_args=()
    # As root, rspamd wants -u/-g and refuses root workers without --insecure; root can read
    # DIR wherever it is (the stock _rspamd user cannot enter a 0700 folder of root's).
    if [[ $(id -u) -eq 0 ]]; then
        user_args=(-u root -g root --insecure)
    fi
    # -f: no daemonizing, so $! is the main process. setsid: its own session, so that a
    # terminal's Ctrl-C or a test runner killing its process group does not reach it; stop
    # does. Not being a process-group leader, setsid execs directly. Its output goes to the
    # log (a test's pipes would otherwise stay open while it runs), and the lock fd 9 closes.
    (cd "$DIR" && exec setsid "$bin" -f -c "$CONFIG" "${RSPAMD_VARS[@]}" "${user_args[@]}" \
        </dev/null >>"$LOG_DIR/stdout.log" 2>&1 9>&-) &
    pid=$!
    echo "$pid" >"$PID_FILE"
    wait_ready "$pid" "$t0"
    echo "$PROG: started rspamd (pid $pid) for $DIR in $(($(now_ms) - t0)) ms" >&2
    print_ports
}

# Sends $1 to DIR's rspamd and waits up to $2 seconds for it to exit.
# Returns 0 once it is gone, 1 if it is still there.
signal_and_wait() {
    local sig=$1 secs=$2 pid deadline
    pid=$(server_pid) || return 0
    if [[ "$sig" == KILL ]]; then
        kill_tree "$pid"
    else
        kill "-$sig" "$pid" 2>/dev/null || true
    fi
    deadline=$(($(now_ms) + secs * 1000))
    while server_pid >/dev/null; do
        [[ $(now_ms) -lt $deadline ]] || return 1
        sleep 0.05
    done
    return 0
}

cmd_stop() {
    set_dir "$@"
    local pid t0 children=()
    if ! pid=$(server_pid); then
        rm -f "$PID_FILE"
        echo "$PROG: not running for $DIR" >&2
        return 0
    fi
    t0=$(now_ms)
    mapfile -t children < <(children_of "$pid")
    if signal_and_wait TERM "${RSPAMD_STOP_TIMEOUT:-10}"; then
        echo "$PROG: stopped rspamd (pid $pid) for $DIR in $(($(now_ms) - t0)) ms" >&2
    else
        echo "$PROG: rspamd (pid $pid) ignored SIGTERM for ${RSPAMD_STOP_TIMEOUT:-10}s; sending SIGKILL" >&2
        signal_and_wait KILL 10 || echo "$PROG: pid $pid is still there after SIGKILL" >&2
    fi
    # Workers that outlived the main process (it was killed): only rspamd processes in DIR.
    local child
    for child in "${children[@]}"; do
        if [[ "$(readlink "/proc/$child/exe" 2>/dev/null)" == */rspamd &&
            "$(readlink "/proc/$child/cwd" 2>/dev/null)" == "$DIR" ]]; then
            kill -KILL "$child" 2>/dev/null || true
        fi
    done
    rm -f "$PID_FILE"
}

cmd_status() {
    set_dir "$@"
    load_ports saved
    local pid
    if ! pid=$(server_pid); then
        echo "$PROG: not running for $DIR" >&2
        return 1
    fi
    if ! pings "$CONTROLLER_PORT"; then
        echo "$PROG: pid $pid runs for $DIR but http://127.0.0.1:$CONTROLLER_PORT/ping does not answer" >&2
        return 1
    fi
    echo "$PROG: running for $DIR (pid $pid)" >&2
    print_ports
}

[[ $# -ge 1 ]] || usage
COMMAND=$1
shift
case "$COMMAND" in
    install)
        [[ $# -eq 0 ]] || usage
        cmd_install
        ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    *) usage ;;
esac
