# scripts/lib.sh - helpers shared by scripts/demo and scripts/bench: build,
# a throwaway authkey, a free loopback port, and a small local cluster
# (one master, some workers) that is always stopped again.
#
# Source it; it sets no shell options of its own. Callers use
# `set -euo pipefail` and call tq_cluster_cleanup from their EXIT trap.
# shellcheck shell=bash

TQ_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TQ_TMP=""          # temp dir of this run (logs, key, data dir)
TQ_ENDPOINT=""     # tcp://127.0.0.1:PORT of the master
TQ_KEY=""          # path of the authkey file
TQ_MASTER_PID=""
TQ_WORKER_PIDS=()
TQ_FG_PID=""       # the command tq_fg is waiting for
TQ_LOGS=()         # every log file started, for tq_show_logs

# tq_build DIR [meson setup options...]: configure DIR once, then build it.
# The build's output is shown (its last 60 lines) only on failure.
tq_build() {
    local dir=$1
    shift
    local log
    log=$(mktemp)
    if { [ -f "$TQ_ROOT/$dir/build.ninja" ] ||
        meson setup "$TQ_ROOT/$dir" "$TQ_ROOT" "$@" >"$log" 2>&1; } &&
        ninja -C "$TQ_ROOT/$dir" >>"$log" 2>&1; then
        rm -f "$log"
        return 0
    fi
    tail -n 60 "$log" >&2
    rm -f "$log"
    echo "build of $dir failed (output above)" >&2
    return 1
}

# tq_free_port: print a TCP port that is free on 127.0.0.1 right now.
tq_free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# tq_cluster_init: make the temp dir, a fresh 0600 authkey (32 random bytes
# as hex, like the master's own generated key) and pick the endpoint. The
# master creates its data dir, TQ_TMP/data, itself.
tq_cluster_init() {
    TQ_TMP=$(mktemp -d "${TMPDIR:-/tmp}/taskq.XXXXXX")
    TQ_KEY=$TQ_TMP/authkey
    (
        umask 077
        od -An -v -tx1 -N32 /dev/urandom | tr -d ' \n' >"$TQ_KEY"
        echo >>"$TQ_KEY"
    )
    chmod 600 "$TQ_KEY"
    TQ_ENDPOINT=tcp://127.0.0.1:$(tq_free_port)
}

# tq_start_master BUILD_DIR [extra flags...]
tq_start_master() {
    local dir=$1
    shift
    local log=$TQ_TMP/master.log
    TQ_LOGS+=("$log")
    "$TQ_ROOT/$dir/master/taskq-master" --bind "$TQ_ENDPOINT" --data-dir "$TQ_TMP/data" \
        --authkey-file "$TQ_KEY" "$@" </dev/null >"$log" 2>&1 &
    TQ_MASTER_PID=$!
}

# tq_start_worker BUILD_DIR NAME [extra flags...]
tq_start_worker() {
    local dir=$1 name=$2
    shift 2
    local log=$TQ_TMP/$name.log
    TQ_LOGS+=("$log")
    "$TQ_ROOT/$dir/worker/taskq-worker" --connect "$TQ_ENDPOINT" --authkey-file "$TQ_KEY" \
        --name "$name" "$@" </dev/null >"$log" 2>&1 &
    TQ_WORKER_PIDS+=("$!")
}

# tq_client BUILD_DIR ARGS...: run the taskq command against the cluster.
tq_client() {
    local dir=$1
    shift
    "$TQ_ROOT/$dir/client/taskq" --connect "$TQ_ENDPOINT" --authkey-file "$TQ_KEY" "$@"
}

# tq_fg CMD...: run CMD and return its status, like a foreground command,
# but so that SIGINT/SIGTERM traps of the script run at once (bash delays
# traps until a foreground child exits, not while it is in `wait`);
# tq_cluster_cleanup stops CMD if it is still running. stdin is kept.
tq_fg() {
    local rc=0
    "$@" <&0 &
    TQ_FG_PID=$!
    wait "$TQ_FG_PID" || rc=$?
    TQ_FG_PID=""
    return "$rc"
}

# tq_alive: 0 if the master and every worker are still running.
tq_alive() {
    local pid
    for pid in "$TQ_MASTER_PID" "${TQ_WORKER_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || return 1
    done
}

# tq_wait_ready BUILD_DIR SECONDS: wait until `taskq status` answers.
# Returns 1 if it did not within SECONDS or a process died meanwhile.
tq_wait_ready() {
    local dir=$1 limit=$2
    local deadline=$((EPOCHSECONDS + limit))
    while [ "$EPOCHSECONDS" -lt "$deadline" ]; do
        tq_alive || return 1
        if tq_fg timeout 3 "$TQ_ROOT/$dir/client/taskq" --connect "$TQ_ENDPOINT" \
            --authkey-file "$TQ_KEY" status </dev/null >/dev/null 2>&1; then
            tq_alive
            return
        fi
        sleep 0.2
    done
    return 1
}

# tq_stop_pids SECONDS PID...: SIGTERM the pids, wait up to SECONDS for
# them to exit, SIGKILL what is left.
tq_stop_pids() {
    local limit=$1
    shift
    [ "$#" -gt 0 ] || return 0
    local pid left i
    kill -TERM "$@" 2>/dev/null || true
    for ((i = 0; i < limit * 10; i++)); do
        left=0
        for pid in "$@"; do
            kill -0 "$pid" 2>/dev/null && left=1
        done
        [ "$left" -eq 0 ] && break
        sleep 0.1
    done
    kill -KILL "$@" 2>/dev/null || true
    wait "$@" 2>/dev/null || true
}

# tq_show_logs [LINES]: print the tail of every log of this run to stderr.
tq_show_logs() {
    local n=${1:-30} log
    for log in "${TQ_LOGS[@]}"; do
        [ -f "$log" ] || continue
        echo "--- last $n lines of $(basename "$log") ---" >&2
        tail -n "$n" "$log" >&2
    done
}

# tq_cluster_cleanup: stop workers first (they drain and say goodbye to
# the master), then the master; remove the temp dir. Safe to call twice.
tq_cluster_cleanup() {
    if [ -n "$TQ_FG_PID" ]; then
        tq_stop_pids 2 "$TQ_FG_PID"
    fi
    TQ_FG_PID=""
    if [ "${#TQ_WORKER_PIDS[@]}" -gt 0 ]; then
        tq_stop_pids 10 "${TQ_WORKER_PIDS[@]}"
    fi
    TQ_WORKER_PIDS=()
    if [ -n "$TQ_MASTER_PID" ]; then
        tq_stop_pids 5 "$TQ_MASTER_PID"
    fi
    TQ_MASTER_PID=""
    if [ -n "$TQ_TMP" ]; then
        rm -rf "$TQ_TMP"
    fi
    TQ_TMP=""
}
