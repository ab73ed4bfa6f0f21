# shellcheck shell=bash
# What the load scripts share, sourced once the binaries are built: a temporary directory
# ($tmp), removed on exit with the servers started (their pids in $pids) killed.

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# Starts a server whose stderr says "listening on http://ADDR"; sets $addr and $pid.
start() {
    local log=$1
    shift
    # Made before it starts: the background job may not have opened it when it is first read.
    : >"$log"
    "$@" >/dev/null 2>"$log" &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 100); do
        addr=$(sed -n 's|.*listening on http://\([0-9.:]*\).*|\1|p' "$log" | head -1)
        [ -n "$addr" ] && return
        sleep 0.1
    done
    echo "$(basename "$0"): $* did not start: $(cat "$log")" >&2
    exit 1
}
