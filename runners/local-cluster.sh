#!/usr/bin/env bash
# A real multi-node Ray cluster on ONE machine, loopback only, for trying
# `regene-search run --address ...` (and Ray's scheduling, failures, dashboard)
# before going to real hardware.
#
#   runners/local-cluster.sh start [N]   head on 127.0.0.2 + N workers on 127.0.0.3, 127.0.0.4, ...
#   runners/local-cluster.sh status      processes, `ray status`, and how to connect
#   runners/local-cluster.sh stop        stop THIS cluster's processes only
#
# Every node is a `ray start --block` process started in its own session (setsid);
# their PIDs, logs and the connection settings live in "$REGENE_CLUSTER_DIR/state/"
# (mode 700: Ray makes its temp dir world-writable, so nothing we read back or ask you
# to `source` lives directly in it). `stop` sends SIGTERM to
# those PIDs (Ray drains and stops the node's own children), then sweeps for any
# process of this user whose command line names this cluster's temp dir. It never
# matches processes by name and never runs a bare `ray stop` (which would stop
# every Ray on the machine).
#
# Environment (all optional):
#   REGENE_CLUSTER_DIR             the cluster's --temp-dir: logs, sockets, state
#                                  (start: a fresh /tmp/rs-cluster.XXXXXX; stop/status: the
#                                  last one started with the default). Keep it short: Ray's
#                                  Unix socket paths live under it (limit ~107 characters).
#   REGENE_CLUSTER_PORT            head GCS port (6379)
#   REGENE_CLUSTER_DASHBOARD_PORT  dashboard port on 127.0.0.1 (8265)
#   REGENE_CLUSTER_CPUS            CPUs each node advertises (cores / (N+1), at least 1;
#                                  all nodes share this machine's cores)
#   REGENE_CLUSTER_GPUS            GPUs each worker advertises (0; the head always gets 0)
#   REGENE_CLUSTER_TIMEOUT         seconds to wait for each node / for the cluster (180)
#   REGENE_CLUSTER_STOP_GRACE      seconds `stop` lets nodes drain before it sweeps (45)
#   RAY                            the `ray` executable (ray on PATH, else ../.venv/bin/ray)
#   RAY_AUTH_MODE                  token (default) or disabled; the same on every node
#   RAY_AUTH_TOKEN_PATH            token file shared by all nodes and the driver
#                                  (~/.ray/auth_token; generated if missing)
#   RAY_AUTH_TOKEN                 the token itself (if set, Ray prefers it over any file)

set -euo pipefail

readonly HEAD_IP=127.0.0.2
SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
readonly SCRIPT_DIR
readonly POINTER_FILE="${XDG_STATE_HOME:-$HOME/.local/state}/regene-search/local-cluster.last"

die() {
    printf 'local-cluster: error: %s\n' "$*" >&2
    exit 1
}

note() {
    printf 'local-cluster: %s\n' "$*" >&2
}

usage() {
    awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}"
}

find_ray() {
    if [[ -n "${RAY:-}" ]]; then
        printf '%s\n' "$RAY"
    elif command -v ray >/dev/null 2>&1; then
        command -v ray
    elif [[ -x "$SCRIPT_DIR/../.venv/bin/ray" ]]; then
        printf '%s\n' "$SCRIPT_DIR/../.venv/bin/ray"
    else
        die "no 'ray' executable: activate the environment where regene-search is installed, or set RAY=/path/to/ray"
    fi
}

# The cluster directory for stop/status: $REGENE_CLUSTER_DIR, else the pointer file.
existing_dir() {
    local dir="${REGENE_CLUSTER_DIR:-}"
    if [[ -z "$dir" && -f "$POINTER_FILE" ]]; then
        dir=$(<"$POINTER_FILE")
    fi
    [[ -n "$dir" ]] || die "which cluster? set REGENE_CLUSTER_DIR to the directory printed by 'start'"
    [[ -f "$dir/state/cluster.env" ]] || die "no local cluster recorded in $dir (missing state/cluster.env)"
    (cd -- "$dir" && pwd -P) # the same spelling `start` gave Ray: absolute, no symlinks
}

# Read KEY from DIR/state/cluster.env without sourcing (executing) the file.
state_get() {
    local dir=$1 key=$2
    grep -m1 "^${key}=" "$dir/state/cluster.env" | cut -d= -f2- || true
}

# True if PID is alive, belongs to us, and its command line names DIR: an argument
# that is DIR, ends in "=DIR", starts with "DIR/", or holds "DIR/" after = " ' or :.
owns_dir() {
    local pid=$1 dir=$2 arg
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    [[ -O "/proc/$pid" ]] || return 1
    while IFS= read -r -d '' arg; do
        if [[ "$arg" == "$dir" || "$arg" == *"=$dir" || "$arg" == "$dir/"* || "$arg" == *[=\"\':]"$dir/"* ]]; then
            return 0
        fi
    done <"/proc/$pid/cmdline" 2>/dev/null
    return 1
}

# Every process of ours whose command line names DIR (not this script itself).
pids_using_dir() {
    local dir=$1 proc pid
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] && continue
        if owns_dir "$pid" "$dir"; then
            printf '%s\n' "$pid"
        fi
    done
}

# Recorded node PIDs that are still this cluster's processes.
live_node_pids() {
    local dir=$1 role pid
    [[ -f "$dir/state/pids" ]] || return 0
    while read -r role pid; do
        [[ "${pid:-}" =~ ^[0-9]+$ ]] || continue
        if owns_dir "$pid" "$dir"; then
            printf '%s %s\n' "$role" "$pid"
        fi
    done <"$dir/state/pids"
}

# `ray start --block ...` in its own session, output to DIR/state/ROLE.log; records the PID.
launch_node() {
    local dir=$1 role=$2
    shift 2
    local log="$dir/state/$role.log"
    if command -v setsid >/dev/null 2>&1; then
        setsid "$@" </dev/null >"$log" 2>&1 &
    else
        nohup "$@" </dev/null >"$log" 2>&1 &
    fi
    printf '%s %s\n' "$role" "$!" >>"$dir/state/pids"
    printf '%s\n' "$!"
}

wait_started() {
    local dir=$1 role=$2 pid=$3 timeout=$4 waited=0
    local log="$dir/state/$role.log"
    while ! grep -q "Ray runtime started" "$log" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            note "$role exited during start; last lines of $log:"
            tail -n 20 "$log" >&2 || true
            return 1
        fi
        if ((waited >= timeout)); then
            note "$role did not start within ${timeout}s; see $log"
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

# Number of active nodes according to `ray status` (0 if it cannot connect).
active_nodes() {
    local ray=$1 address=$2
    local out
    out=$("$ray" status --address "$address" 2>/dev/null) || out=""
    awk '/^Active:/ {on=1; next} /^[A-Z]/ {on=0} on && /node_/ {n++} END {print n+0}' <<<"$out"
}

port_in_use() {
    local host=$1 port=$2
    timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null
}

setup_auth() {
    local ray=$1 dir=$2
    export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
    case "$RAY_AUTH_MODE" in
        token) ;;
        disabled)
            note "WARNING: RAY_AUTH_MODE=disabled: anyone who reaches this cluster's ports can run code as $(id -un)"
            return 0
            ;;
        *) die "RAY_AUTH_MODE must be token or disabled, got '$RAY_AUTH_MODE'" ;;
    esac
    if [[ -n "${RAY_AUTH_TOKEN:-}" ]]; then
        return 0 # inherited by every node started below
    fi
    local token_path="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
    if [[ ! -s "$token_path" ]]; then
        if [[ "$token_path" == "$HOME/.ray/auth_token" ]]; then
            "$ray" get-auth-token --generate >/dev/null
        else
            mkdir -p -- "$(dirname -- "$token_path")"
            (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$token_path")
        fi
        note "generated a new auth token in $token_path"
    fi
    [[ -s "$token_path" ]] || die "no auth token in $token_path"
    export RAY_AUTH_TOKEN_PATH="$token_path"
    printf 'export RAY_AUTH_TOKEN_PATH=%q\n' "$token_path" >>"$dir/state/client.env"
}

# Stop what a failed start left behind (in a subshell: cmd_stop may exit), then fail.
abort_start() {
    local dir=$1
    shift
    (REGENE_CLUSTER_DIR=$dir cmd_stop) >/dev/null 2>&1 || true
    die "$*"
}

cmd_start() {
    local workers=${1:-1}
    if ! [[ "$workers" =~ ^[0-9]+$ ]] || ((workers > 252)); then
        die "N must be a number of workers between 0 and 252, got '$workers'"
    fi
    local ray port dport timeout cpus gpus dir explicit_dir=1
    ray=$(find_ray)
    port=${REGENE_CLUSTER_PORT:-6379}
    dport=${REGENE_CLUSTER_DASHBOARD_PORT:-8265}
    timeout=${REGENE_CLUSTER_TIMEOUT:-180}
    local cores
    cores=$(nproc 2>/dev/null || echo 1)
    cpus=${REGENE_CLUSTER_CPUS:-$((cores / (workers + 1) > 0 ? cores / (workers + 1) : 1))}
    gpus=${REGENE_CLUSTER_GPUS:-0}

    if [[ -n "${REGENE_CLUSTER_DIR:-}" ]]; then
        dir=${REGENE_CLUSTER_DIR%/}
        mkdir -p -- "$dir"
    else
        explicit_dir=0
        dir=$(mktemp -d /tmp/rs-cluster.XXXXXX)
    fi
    dir=$(cd -- "$dir" && pwd -P)
    chmod 700 "$dir"
    mkdir -p -m 700 -- "$dir/state"
    [[ -O "$dir/state" ]] || die "$dir/state is not owned by $(id -un)"
    if [[ -n "$(live_node_pids "$dir")" ]]; then
        die "a cluster is already running in $dir; stop it first: REGENE_CLUSTER_DIR=$dir $0 stop"
    fi
    if port_in_use "$HEAD_IP" "$port"; then
        die "port $port is already in use; choose another with REGENE_CLUSTER_PORT"
    fi
    if port_in_use 127.0.0.1 "$dport"; then
        die "dashboard port $dport is already in use; choose another with REGENE_CLUSTER_DASHBOARD_PORT"
    fi
    : >"$dir/state/pids"
    printf 'export RAY_AUTH_MODE=%q\n' "${RAY_AUTH_MODE:-token}" >"$dir/state/client.env"
    setup_auth "$ray" "$dir"

    local address="$HEAD_IP:$port"
    {
        printf 'ADDRESS=%s\n' "$address"
        printf 'DASHBOARD=http://127.0.0.1:%s\n' "$dport"
        printf 'WORKERS=%s\n' "$workers"
        printf 'AUTH_MODE=%s\n' "$RAY_AUTH_MODE"
        printf 'TOKEN_PATH=%s\n' "${RAY_AUTH_TOKEN_PATH:-}"
    } >"$dir/state/cluster.env"
    if ((explicit_dir == 0)); then
        mkdir -p -- "$(dirname -- "$POINTER_FILE")"
        printf '%s\n' "$dir" >"$POINTER_FILE"
    fi

    note "starting head on $address (temp dir $dir, $cpus CPU per node)"
    local pid
    pid=$(launch_node "$dir" head "$ray" start --head --block \
        --node-ip-address="$HEAD_IP" --port="$port" --temp-dir="$dir" \
        --dashboard-host=127.0.0.1 --dashboard-port="$dport" \
        --num-cpus="$cpus" --num-gpus=0 --disable-usage-stats)
    if ! wait_started "$dir" head "$pid" "$timeout"; then
        abort_start "$dir" "the head did not start; logs in $dir"
    fi

    local i ip
    for ((i = 1; i <= workers; i++)); do
        ip="127.0.0.$((i + 2))"
        note "starting worker $i on $ip"
        pid=$(launch_node "$dir" "worker$i" "$ray" start --block \
            --address="$address" --node-ip-address="$ip" --temp-dir="$dir" \
            --num-cpus="$cpus" --num-gpus="$gpus" --disable-usage-stats)
        if ! wait_started "$dir" "worker$i" "$pid" "$timeout"; then
            abort_start "$dir" "worker $i did not start; logs in $dir"
        fi
    done

    chmod 700 "$dir" # `ray start` makes its temp dir world-writable; only we need it

    local waited=0 alive=0
    while alive=$(active_nodes "$ray" "$address") && ((alive < workers + 1)); do
        if ((waited >= timeout)); then
            abort_start "$dir" "only $alive of $((workers + 1)) nodes became active within ${timeout}s; logs in $dir"
        fi
        sleep 2
        waited=$((waited + 2))
    done

    cat <<EOF
Local Ray cluster is up: $alive nodes (head $HEAD_IP + $workers worker(s)), temp dir $dir

Connect (same auth settings as the nodes):
    source $dir/state/client.env
    regene-search run DATASET --address $address --results ROOT ...

Dashboard (this machine only): http://127.0.0.1:$dport
Status:  REGENE_CLUSTER_DIR=$dir $0 status
Stop:    REGENE_CLUSTER_DIR=$dir $0 stop
EOF
}

cmd_status() {
    local dir ray address
    dir=$(existing_dir)
    ray=$(find_ray)
    address=$(state_get "$dir" ADDRESS)
    local nodes
    nodes=$(live_node_pids "$dir")
    printf 'temp dir:  %s\naddress:   %s\ndashboard: %s\nauth mode: %s\n' \
        "$dir" "$address" "$(state_get "$dir" DASHBOARD)" "$(state_get "$dir" AUTH_MODE)"
    if [[ -z "$nodes" ]]; then
        printf 'node processes: none running\n'
        return 1
    fi
    printf 'node processes (role pid):\n'
    sed 's/^/  /' <<<"$nodes"
    local token_path
    token_path=$(state_get "$dir" TOKEN_PATH)
    RAY_AUTH_MODE=$(state_get "$dir" AUTH_MODE)
    export RAY_AUTH_MODE
    if [[ -n "$token_path" ]]; then
        export RAY_AUTH_TOKEN_PATH="$token_path"
    fi
    "$ray" status --address "$address"
}

cmd_stop() {
    local dir grace
    dir=$(existing_dir)
    grace=${REGENE_CLUSTER_STOP_GRACE:-45}
    local role pid waited=0
    # Workers first, then the head: SIGTERM makes `ray start --block` drain and stop its node.
    while read -r role pid; do
        note "stopping $role (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
    done < <(live_node_pids "$dir" | sort -r)
    while [[ -n "$(live_node_pids "$dir")" ]] && ((waited < grace)); do
        sleep 1
        waited=$((waited + 1))
    done
    # Anything left that names this cluster's temp dir (orphaned workers, agents).
    local sig leftovers
    for sig in TERM KILL; do
        leftovers=$(pids_using_dir "$dir")
        [[ -n "$leftovers" ]] || break
        note "sending SIG$sig to leftover processes of $dir: ${leftovers//$'\n'/ }"
        # shellcheck disable=SC2086  # one PID per word
        kill -"$sig" $leftovers 2>/dev/null || true
        waited=0
        while [[ -n "$(pids_using_dir "$dir")" ]] && ((waited < 10)); do
            sleep 1
            waited=$((waited + 1))
        done
    done
    if [[ -f "$POINTER_FILE" && "$(<"$POINTER_FILE")" == "$dir" ]]; then
        rm -f -- "$POINTER_FILE"
    fi
    if [[ -n "$(pids_using_dir "$dir")" ]]; then
        die "some processes of $dir are still running: $(pids_using_dir "$dir" | tr '\n' ' ')"
    fi
    printf 'stopped the local cluster in %s (logs kept there; remove with: rm -rf %s)\n' "$dir" "$dir"
}

main() {
    local command=${1:-}
    case "$command" in
        start)
            shift
            (($# <= 1)) || die "usage: $0 start [N]"
            cmd_start "$@"
            ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        -h | --help | help) usage ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

main "$@"
