#!/usr/bin/env bash
# cluster.sh: a private ClickHouse cluster on loopback for the tests and bench/fleet.sh: one
# ZooKeeper (Debian's `zookeeper` package, run from its jars with a private config) and
# clickhouse-server instances started by tests/harness/clickhouse.sh, each with a config.d file
# that names the cluster, its own macros and the ZooKeeper.
#
# Usage:
#   tests/harness/cluster.sh install            zookeeper + clickhouse (install-deps.sh cluster clickhouse)
#   tests/harness/cluster.sh zk-start DIR       start ZooKeeper in DIR on $ZK_PORT, wait until it serves (`stat`)
#   tests/harness/cluster.sh zk-stop DIR        SIGTERM (then SIGKILL) the ZooKeeper of DIR; never fails
#   tests/harness/cluster.sh configure CHDIR    write CHDIR/config.d/cluster.xml (see below); start the
#                                               server afterwards with clickhouse.sh start CHDIR
#
# Environment of `configure`:
#   CLUSTER      the cluster's name (letters, digits, _)
#   SHARDS       the cluster's servers by native TCP port: shards separated by spaces, replicas of
#                one shard by commas, e.g. "29001 29004" (two shards) or "29001,29004" (one shard,
#                two replicas); every host is 127.0.0.1
#   SHARD        this server's {shard} macro (e.g. 01)
#   REPLICA      this server's {replica} macro (e.g. ch10)
#   ZK_PORT      the ZooKeeper client port on 127.0.0.1
# Environment of zk-start: ZK_PORT, ZK_START_TIMEOUT (seconds, default 60).
#
# ZooKeeper listens on 127.0.0.1:$ZK_PORT only; its admin HTTP server (port 8080 by default) is
# off, and only the `ruok` and `stat` four-letter words are allowed (readiness is `stat`). It runs in its own session
# (setsid); zk-stop signals only the pid in DIR/zookeeper.pid while its command line still names
# DIR/zoo.cfg. clickhouse.sh rewrites config.xml at every start but keeps config.d/, so a server
# stopped and started again is still a member of the cluster.
set -euo pipefail

readonly PROG=cluster.sh

die() {
    echo "$PROG: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 install | zk-start DIR | zk-stop DIR | configure CHDIR" >&2
    exit 2
}

now_ms() {
    date +%s%3N
}

check_port() {
    [[ "$1" =~ ^[0-9]+$ && "$1" -ge 1024 && "$1" -le 65535 ]] || die "bad port '$1'"
}

# The ZooKeeper server's pid if it is alive and still the one of DIR.
zk_pid() {
    local pid
    [[ -r "$DIR/zookeeper.pid" ]] || return 1
    pid=$(tr -d ' \n' <"$DIR/zookeeper.pid")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR/zoo.cfg" || return 1
    [[ "$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)" != "Z" ]] || return 1
    echo "$pid"
}

# True when ZooKeeper on $ZK_PORT serves requests. `ruok` answers `imok` a few hundred ms before
# that; a ClickHouse 18.16 that connects in this window fails the handshake and its DDL thread
# then segfaults (seen here), so readiness is `stat` answering with the server's version.
zk_ok() {
    local answer
    answer=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$ZK_PORT; printf stat >&3; cat <&3" 2>/dev/null) || true
    [[ "$answer" == "Zookeeper version"* ]]
}

cmd_zk_start() {
    [[ $# -eq 1 && -n "$1" ]] || usage
    mkdir -p "$1"
    DIR=$(realpath -m "$1")
    : "${ZK_PORT:?set ZK_PORT}"
    check_port "$ZK_PORT"
    local pid t0
    t0=$(now_ms)
    if pid=$(zk_pid) && zk_ok; then
        echo "$PROG: ZooKeeper already running for $DIR (pid $pid)" >&2
        return 0
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$ZK_PORT") 2>/dev/null; then
        die "127.0.0.1:$ZK_PORT is already in use; set ZK_PORT"
    fi
    [[ -r /usr/share/java/zookeeper.jar ]] || die "ZooKeeper is not installed; run '$0 install'"
    mkdir -p "$DIR/data"
    cat >"$DIR/zoo.cfg" <<EOF
# Written by tests/harness/cluster.sh zk-start; rewritten at every start.
tickTime=500
initLimit=10
syncLimit=5
dataDir=$DIR/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
maxClientCnxns=200
admin.enableServer=false
4lw.commands.whitelist=ruok,stat
EOF
    cat >"$DIR/log4j.properties" <<'EOF'
log4j.rootLogger=WARN, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d %p %c: %m%n
EOF
    # The jar's manifest names its dependencies under /usr/share/java.
    (cd "$DIR" && exec setsid java -Xmx256m -Dzookeeper.jmx.log4j.disable=true \
        -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
        -cp "$DIR:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar" org.apache.zookeeper.server.ZooKeeperServerMain \
        "$DIR/zoo.cfg" </dev/null >>"$DIR/zookeeper.log" 2>&1) &
    pid=$!
    echo "$pid" >"$DIR/zookeeper.pid"
    local deadline=$((t0 + ${ZK_START_TIMEOUT:-60} * 1000))
    until zk_ok; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$DIR/zookeeper.log" >&2 || true
            die "ZooKeeper for $DIR exited during startup"
        fi
        if [[ $(now_ms) -ge $deadline ]]; then
            tail -n 20 "$DIR/zookeeper.log" >&2 || true
            kill -KILL "$pid" 2>/dev/null || true
            die "ZooKeeper for $DIR did not serve within ${ZK_START_TIMEOUT:-60}s"
        fi
        sleep 0.05
    done
    echo "$PROG: started ZooKeeper (pid $pid) on 127.0.0.1:$ZK_PORT in $(($(now_ms) - t0)) ms" >&2
}

cmd_zk_stop() {
    [[ $# -eq 1 && -n "$1" ]] || usage
    DIR=$(realpath -m "$1")
    local pid deadline
    if ! pid=$(zk_pid); then
        rm -f "$DIR/zookeeper.pid"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$(($(now_ms) + 10000))
    while zk_pid >/dev/null; do
        if [[ $(now_ms) -ge $deadline ]]; then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.05
    done
    rm -f "$DIR/zookeeper.pid"
    echo "$PROG: stopped ZooKeeper (pid $pid) for $DIR" >&2
}

cmd_configure() {
    [[ $# -eq 1 && -n "$1" ]] || usage
    local dir
    dir=$(realpath -m "$1")
    : "${CLUSTER:?set CLUSTER}" "${SHARDS:?set SHARDS}" "${SHARD:?set SHARD}" "${REPLICA:?set REPLICA}" "${ZK_PORT:?set ZK_PORT}"
    [[ "$CLUSTER" =~ ^[A-Za-z0-9_]+$ ]] || die "bad cluster name '$CLUSTER'"
    [[ "$SHARD" =~ ^[A-Za-z0-9_]+$ && "$REPLICA" =~ ^[A-Za-z0-9_]+$ ]] || die "bad macros '$SHARD' '$REPLICA'"
    check_port "$ZK_PORT"
    local shards="" shard port
    for shard in $SHARDS; do
        shards+="            <shard>
                <internal_replication>true</internal_replication>
"
        for port in ${shard//,/ }; do
            check_port "$port"
            shards+="                <replica><host>127.0.0.1</host><port>$port</port></replica>
"
        done
        shards+="            </shard>
"
    done
    mkdir -p "$dir/config.d"
    cat >"$dir/config.d/cluster.xml" <<EOF
<?xml version="1.0"?>
<!-- Written by tests/harness/cluster.sh configure. -->
<yandex>
    <remote_servers>
        <$CLUSTER>
$shards        </$CLUSTER>
    </remote_servers>
    <macros>
        <shard>$SHARD</shard>
        <replica>$REPLICA</replica>
    </macros>
    <zookeeper>
        <node><host>127.0.0.1</host><port>$ZK_PORT</port></node>
        <session_timeout_ms>30000</session_timeout_ms>
    </zookeeper>
    <distributed_ddl>
        <path>/clickhouse/task_queue/ddl</path>
    </distributed_ddl>
</yandex>
EOF
}

[[ $# -ge 1 ]] || usage
COMMAND=$1
shift
case "$COMMAND" in
    install)
        [[ $# -eq 0 ]] || usage
        bash "$(dirname "${BASH_SOURCE[0]}")/install-deps.sh" clickhouse cluster
        ;;
    zk-start) cmd_zk_start "$@" ;;
    zk-stop) cmd_zk_stop "$@" ;;
    configure) cmd_configure "$@" ;;
    *) usage ;;
esac
