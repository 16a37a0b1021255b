#!/usr/bin/env bash
# clickhouse.sh: installs Debian's ClickHouse and runs private instances of it
# on loopback for the tests.
#
# Usage:
#   tests/harness/clickhouse.sh install        install clickhouse-server, clickhouse-client and curl
#                                              if missing (no apt at all when they are installed)
#   tests/harness/clickhouse.sh start DIR      write DIR's config, start the server, wait until it
#                                              answers /ping, print its URL (does nothing if it runs)
#   tests/harness/clickhouse.sh stop DIR       SIGTERM, then SIGKILL after CH_STOP_TIMEOUT; never fails
#   tests/harness/clickhouse.sh kill DIR       SIGKILL at once (crash tests); never fails
#   tests/harness/clickhouse.sh restart DIR    stop, then start
#   tests/harness/clickhouse.sh status DIR     exit 0 if DIR's server runs and answers /ping
#   tests/harness/clickhouse.sh url DIR        print DIR's URL (from DIR/ch.env)
#
# Environment (read by start/restart; the values in use are written to DIR/ch.env):
#   CH_HTTP_PORT        HTTP port on 127.0.0.1 (default 28123)
#   CH_TCP_PORT         native TCP port on 127.0.0.1 (default 29000)
#   CH_INTERSERVER_PORT interserver HTTP port on 127.0.0.1 (default 29009)
#   CH_START_TIMEOUT    seconds to wait for /ping (default 30)
#   CH_STOP_TIMEOUT     seconds between SIGTERM and SIGKILL (default 10)
#   CH_LOG_LEVEL        server log level (default warning)
#   CH_MARK_CACHE_SIZE  bytes (default 268435456; 18.16 refuses to start without the setting)
#   CH_OLD_PARTS_LIFETIME seconds merged-away parts are kept (default 1; see below)
#   CH_SERVER           server binary (default: clickhouse-server from PATH or /usr/sbin)
#
# Layout of DIR:
#   DIR/config.xml, DIR/users.xml   the private configuration (rewritten at each start)
#   DIR/ch.env                      CH_URL, CH_HTTP_PORT, CH_TCP_PORT, CH_INTERSERVER_PORT
#   DIR/clickhouse.pid              the server's pid while it runs
#   DIR/data/ DIR/tmp/ DIR/user_files/ DIR/format_schemas/
#   DIR/log/clickhouse-server.log, .err.log, stdout.log
#
# Things Debian's 18.16.1 needs or does (shared/research/CLICKHOUSE.md §2):
#   * the root element <yandex>, a <logger> section, <mark_cache_size>, and a users
#     file with a "default" profile; without any of them the server exits at startup;
#   * merged-away parts are reloaded as active by a restart if they are still on disk
#     (TRUNCATE / DROP PARTITION data comes back), so old_parts_lifetime is 1 s here;
#     tests that restart the server should still clean up with DROP TABLE + CREATE;
#   * OPTIMIZE ... DEDUPLICATE on a table with two or more parts segfaults the server.
# Everything listens on 127.0.0.1 only; the default user has no password and is
# limited to 127.0.0.1 and ::1. The server runs in its own session (setsid), so
# only stop/kill end it; concurrent calls for one DIR take turns (flock on
# DIR/.clickhouse.sh.lock). stop and kill signal only the pid in DIR/clickhouse.pid,
# and only while its command line still names DIR/config.xml.
set -euo pipefail

readonly PROG=clickhouse.sh

die() {
    echo "$PROG: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 install | start|stop|kill|restart|status|url DIR" >&2
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

cmd_install() {
    # install-deps.sh is the one place that installs packages (policy-rc.d, apt-get update only
    # when needed, one retry).
    bash "$(dirname "${BASH_SOURCE[0]}")/install-deps.sh" clickhouse
    echo "$PROG: installed ($(clickhouse_version))"
}

clickhouse_version() {
    dpkg-query -W -f='clickhouse-server ${Version}' clickhouse-server 2>/dev/null || echo "clickhouse-server not installed"
}

# ---------------------------------------------------------------------------
# instance helpers

set_dir() {
    [[ $# -eq 1 && -n "$1" ]] || usage
    if [[ "$COMMAND" == start || "$COMMAND" == restart ]]; then
        mkdir -p "$1"
    fi
    DIR=$(realpath -m "$1")
    PID_FILE="$DIR/clickhouse.pid"
    CONFIG="$DIR/config.xml"
    LOG_DIR="$DIR/log"
    # Concurrent start/stop calls for one DIR (parallel tests) take turns.
    # The server must not inherit this descriptor (see cmd_start).
    if [[ -d "$DIR" && "$COMMAND" != status && "$COMMAND" != url && -z "${LOCKED:-}" ]]; then
        exec 9>"$DIR/.clickhouse.sh.lock"
        flock 9
        LOCKED=1
    fi
}

# Loads the ports of the instance: the ones it was started with (DIR/ch.env)
# when it runs, otherwise the environment or the defaults.
load_ports() {
    local env_http=${CH_HTTP_PORT:-} env_tcp=${CH_TCP_PORT:-} env_inter=${CH_INTERSERVER_PORT:-}
    if [[ "${1:-}" == "saved" && -r "$DIR/ch.env" ]]; then
        # shellcheck disable=SC1091
        source "$DIR/ch.env"
    else
        CH_HTTP_PORT=${env_http:-28123}
        CH_TCP_PORT=${env_tcp:-29000}
        CH_INTERSERVER_PORT=${env_inter:-29009}
    fi
    local port
    for port in "$CH_HTTP_PORT" "$CH_TCP_PORT" "$CH_INTERSERVER_PORT"; do
        [[ "$port" =~ ^[0-9]+$ && "$port" -ge 1024 && "$port" -le 65535 ]] ||
            die "bad port '$port' (CH_HTTP_PORT, CH_TCP_PORT, CH_INTERSERVER_PORT must be 1024-65535)"
    done
    URL="http://127.0.0.1:$CH_HTTP_PORT"
}

# Prints the pid of DIR's server if it is alive. The pid file can outlive the
# server, so the process must still be clickhouse with DIR's config file.
server_pid() {
    local pid
    [[ -r "$PID_FILE" ]] || return 1
    pid=$(tr -d ' \n' <"$PID_FILE")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--config-file=$CONFIG" || return 1
    # A zombie is as good as gone.
    [[ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" != "Z" ]] || return 1
    echo "$pid"
}

# True when something answers ClickHouse's /ping on the HTTP port.
pings() {
    local body
    body=$(curl -s --max-time 1 "$URL/ping" 2>/dev/null) || return 1
    [[ "$body" == "Ok." ]]
}

# True when something accepts connections on 127.0.0.1:$1.
port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Remembers how long the logs are, so that log_tail shows only this start's lines.
mark_logs() {
    local f
    LOG_MARKS=()
    for f in "$LOG_DIR/clickhouse-server.err.log" "$LOG_DIR/stdout.log"; do
        LOG_MARKS+=("$(stat -c %s "$f" 2>/dev/null || echo 0)")
    done
}

log_tail() {
    local f i=0 start
    for f in "$LOG_DIR/clickhouse-server.err.log" "$LOG_DIR/stdout.log"; do
        start=$((${LOG_MARKS[$i]:-0} + 1))
        i=$((i + 1))
        if [[ -s "$f" ]] && [[ $(stat -c %s "$f") -ge $start ]]; then
            echo "---- $f (last lines of this start)" >&2
            tail -c "+$start" "$f" | tail -n 25 >&2
        fi
    done
}

xml_escape() {
    local s=$1
    s=${s//&/&amp;}
    s=${s//</&lt;}
    s=${s//>/&gt;}
    printf '%s' "$s"
}

write_config() {
    local d
    d=$(xml_escape "$DIR")
    mkdir -p "$DIR/data" "$DIR/tmp" "$DIR/user_files" "$DIR/format_schemas" "$LOG_DIR"
    cat >"$CONFIG" <<EOF
<?xml version="1.0"?>
<!-- Written by tests/harness/clickhouse.sh start; rewritten at every start. -->
<yandex>
    <logger>
        <level>${CH_LOG_LEVEL:-warning}</level>
        <log>$d/log/clickhouse-server.log</log>
        <errorlog>$d/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
        <console>0</console>
    </logger>

    <listen_host>127.0.0.1</listen_host>
    <http_port>$CH_HTTP_PORT</http_port>
    <tcp_port>$CH_TCP_PORT</tcp_port>
    <interserver_http_port>$CH_INTERSERVER_PORT</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>

    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <mark_cache_size>${CH_MARK_CACHE_SIZE:-268435456}</mark_cache_size>

    <path>$d/data/</path>
    <tmp_path>$d/tmp/</tmp_path>
    <user_files_path>$d/user_files/</user_files_path>
    <format_schema_path>$d/format_schemas/</format_schema_path>
    <users_config>$d/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>

    <!-- Tests drop big tables and partitions freely. -->
    <max_table_size_to_drop>0</max_table_size_to_drop>
    <max_partition_size_to_drop>0</max_partition_size_to_drop>

    <!-- 18.16 reloads merged-away parts still on disk as active after a restart. -->
    <merge_tree>
        <old_parts_lifetime>${CH_OLD_PARTS_LIFETIME:-1}</old_parts_lifetime>
        <cleanup_delay_period>1</cleanup_delay_period>
    </merge_tree>

    <remote_servers>
        <local>
            <shard>
                <replica>
                    <host>127.0.0.1</host>
                    <port>$CH_TCP_PORT</port>
                </replica>
            </shard>
        </local>
    </remote_servers>
</yandex>
EOF
    cat >"$DIR/users.xml" <<'EOF'
<?xml version="1.0"?>
<!-- Written by tests/harness/clickhouse.sh start; rewritten at every start. -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
        <readonly>
            <readonly>1</readonly>
        </readonly>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
    cat >"$DIR/ch.env" <<EOF
CH_URL=$URL
CH_HTTP_PORT=$CH_HTTP_PORT
CH_TCP_PORT=$CH_TCP_PORT
CH_INTERSERVER_PORT=$CH_INTERSERVER_PORT
EOF
}

server_bin() {
    local bin=${CH_SERVER:-}
    if [[ -z "$bin" ]]; then
        # Debian puts it in /usr/sbin, which a non-root PATH may lack.
        bin=$(PATH="$PATH:/usr/sbin" command -v clickhouse-server 2>/dev/null) ||
            die "clickhouse-server not found; run '$0 install' first"
    fi
    [[ -x "$bin" ]] || die "$bin is not executable"
    echo "$bin"
}

# Waits until DIR's server $1 answers /ping; dies with the log tail if it exits
# or the timeout passes.
wait_ready() {
    local pid=$1 t0=$2 timeout=${CH_START_TIMEOUT:-30}
    local deadline=$((t0 + timeout * 1000))
    while true; do
        if pings && server_pid >/dev/null; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null || [[ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" == "Z" ]]; then
            wait "$pid" 2>/dev/null && rc=0 || rc=$?
            rm -f "$PID_FILE"
            echo "$PROG: clickhouse-server for $DIR exited during startup (status $rc)" >&2
            log_tail
            exit 1
        fi
        if [[ $(now_ms) -ge $deadline ]]; then
            echo "$PROG: clickhouse-server for $DIR (pid $pid) did not answer $URL/ping within ${timeout}s" >&2
            log_tail
            kill -KILL "$pid" 2>/dev/null || true
            rm -f "$PID_FILE"
            exit 1
        fi
        sleep 0.05
    done
}

# ---------------------------------------------------------------------------
# commands

cmd_start() {
    set_dir "$@"
    command -v curl >/dev/null || die "curl not found; run '$0 install' first"
    local pid t0
    t0=$(now_ms)
    if pid=$(server_pid); then
        load_ports saved
        wait_ready "$pid" "$t0"
        echo "$PROG: already running for $DIR (pid $pid)" >&2
        echo "$URL"
        return 0
    fi
    load_ports
    local port
    for port in "$CH_HTTP_PORT" "$CH_TCP_PORT" "$CH_INTERSERVER_PORT"; do
        if port_busy "$port"; then
            die "127.0.0.1:$port is already in use by another process; set CH_HTTP_PORT/CH_TCP_PORT/CH_INTERSERVER_PORT"
        fi
    done
    local bin
    bin=$(server_bin)
    write_config
    mark_logs
    rm -f "$PID_FILE"
    # setsid: the server gets its own session, so that a terminal's Ctrl-C or a
    # test runner killing its process group does not reach it; stop/kill do.
    # Not being a process-group leader, setsid execs directly: $! is the server.
    (cd "$DIR" && exec setsid "$bin" --config-file="$CONFIG" </dev/null >>"$LOG_DIR/stdout.log" 2>&1 9>&-) &
    pid=$!
    echo "$pid" >"$PID_FILE"
    wait_ready "$pid" "$t0"
    echo "$PROG: started clickhouse-server (pid $pid) for $DIR in $(($(now_ms) - t0)) ms" >&2
    echo "$URL"
}

# Sends $1 to DIR's server and waits up to $2 seconds for it to exit.
# Returns 0 once it is gone, 1 if it is still there.
signal_and_wait() {
    local sig=$1 secs=$2 pid deadline
    pid=$(server_pid) || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    deadline=$(($(now_ms) + secs * 1000))
    while server_pid >/dev/null; do
        [[ $(now_ms) -lt $deadline ]] || return 1
        sleep 0.05
    done
    return 0
}

cmd_stop() {
    set_dir "$@"
    local pid t0
    if ! pid=$(server_pid); then
        rm -f "$PID_FILE"
        echo "$PROG: not running for $DIR" >&2
        return 0
    fi
    t0=$(now_ms)
    if signal_and_wait TERM "${CH_STOP_TIMEOUT:-10}"; then
        echo "$PROG: stopped clickhouse-server (pid $pid) for $DIR in $(($(now_ms) - t0)) ms" >&2
    else
        echo "$PROG: clickhouse-server (pid $pid) ignored SIGTERM for ${CH_STOP_TIMEOUT:-10}s; sending SIGKILL" >&2
        signal_and_wait KILL 10 || echo "$PROG: pid $pid is still there after SIGKILL" >&2
    fi
    rm -f "$PID_FILE"
}

cmd_kill() {
    set_dir "$@"
    local pid
    if ! pid=$(server_pid); then
        rm -f "$PID_FILE"
        echo "$PROG: not running for $DIR" >&2
        return 0
    fi
    signal_and_wait KILL 10 || echo "$PROG: pid $pid is still there after SIGKILL" >&2
    rm -f "$PID_FILE"
    echo "$PROG: killed clickhouse-server (pid $pid) for $DIR" >&2
}

cmd_status() {
    set_dir "$@"
    load_ports saved
    local pid
    if ! pid=$(server_pid); then
        echo "$PROG: not running for $DIR" >&2
        return 1
    fi
    if ! pings; then
        echo "$PROG: pid $pid runs for $DIR but $URL/ping does not answer" >&2
        return 1
    fi
    echo "$PROG: running for $DIR (pid $pid) at $URL" >&2
    echo "$URL"
}

cmd_url() {
    set_dir "$@"
    load_ports saved
    echo "$URL"
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
    kill) cmd_kill "$@" ;;
    restart)
        cmd_stop "$@"
        cmd_start "$@"
        ;;
    status) cmd_status "$@" ;;
    url) cmd_url "$@" ;;
    *) usage ;;
esac
