#!/usr/bin/env bash
# Does `gitops serve` grow? Its resident memory (VmRSS, and the peak VmHWM, from
# /proc/PID/status) after SMALL and after LARGE signed GitHub push deliveries, each with its own
# delivery id and its own body (a body seen again within the replay window is a duplicate, so
# every delivery here goes through the dedupe index):
#
# - `serve --no-run`: the fixture `push.with-new-branch.json` with its own `after` each time;
#   100 then 20,000 deliveries.
# - `serve` with runs: pushes to main of a served repository whose `.gitops.yml` has a 3-stage
#   pipeline of `true` stages (local backend); 100 then 2,000 deliveries, the bodies cycling
#   through COMMITS commits; the memory is read once every run has finished.
#
#   benches/load/rss.sh     # NO_RUN="100 20000" RUNS="100 2000" SENDERS=4 COMMITS=10 by default
#
# Deliveries are signed and sent by a small Python sender (SENDERS connections, kept alive).
# The memory is read once the ledger holds every delivery as done (and every run finished),
# after SETTLE seconds (1). The allocator keeps freed pages for a while (see benches/README.md):
# `MIMALLOC_PURGE_DELAY=0 benches/load/rss.sh` shows the memory in use instead. Prints a
# Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
NO_RUN=${NO_RUN:-100 20000}
RUNS=${RUNS:-100 2000}
SENDERS=${SENDERS:-4}
COMMITS=${COMMITS:-10}
SETTLE=${SETTLE:-1}
FIXTURE=${FIXTURE:-../shared/fixtures/webhooks/github/push.with-new-branch.json}
SECRET=load-test-secret
cargo build --release --quiet -p gitops-examples --bin gitops
# shellcheck source=benches/load/lib.sh
. benches/load/lib.sh

# The sender: deliveries FROM..TO-1 of a kind, signed, over SENDERS kept-alive connections;
# exits non-zero when one is not answered 202.
cat >"$tmp/send.py" <<'EOF'
import hashlib, hmac, http.client, json, sys, threading
addr, secret, kind, first, last, senders, extra = sys.argv[1:8]
host, port = addr.rsplit(":", 1)
first, last, senders = int(first), int(last), int(senders)
if kind == "fixture":
    template = json.load(open(extra))
else:
    commits = extra.split(",")
def body(i):
    if kind == "fixture":
        d = dict(template)
        sha = hashlib.sha1(b"rss-%d" % i).hexdigest()
        d["after"] = sha
        d["head_commit"] = dict(d["head_commit"], id=sha)
    else:
        d = {"ref": "refs/heads/main", "before": "0" * 40, "after": commits[i % len(commits)],
             "created": False, "deleted": False, "forced": False, "compare": "rss-%d" % i,
             "sender": {"login": "octo"}, "repository": {"full_name": "o/served"}}
    return json.dumps(d).encode()
failed = []
def send(t):
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    for i in range(first + t, last, senders):
        b = body(i)
        sig = "sha256=" + hmac.new(secret.encode(), b, hashlib.sha256).hexdigest()
        conn.request("POST", "/webhooks/github", b, {
            "Content-Type": "application/json", "X-GitHub-Event": "push",
            "X-GitHub-Delivery": "rss-%s-%d" % (kind, i), "X-Hub-Signature-256": sig})
        r = conn.getresponse()
        text = r.read()
        if r.status != 202:
            failed.append("%d: %d %s" % (i, r.status, text[:200]))
threads = [threading.Thread(target=send, args=(t,)) for t in range(senders)]
for t in threads: t.start()
for t in threads: t.join()
if failed:
    sys.exit("%d deliveries not accepted, e.g. %s" % (len(failed), failed[:3]))
EOF

# Waits until the SQL query on the ledger in $1 prints $2 (10 minutes at most).
wait_for() {
    local state=$1 want=$2 query=$3 got=''
    for _ in $(seq 6000); do
        got=$(sqlite3 "$state/ledger.sqlite3" "$query" 2>/dev/null || true)
        [ "$got" = "$want" ] && return
        sleep 0.1
    done
    echo "rss.sh: waited for $want from \"$query\", have $got" >&2
    exit 1
}

kib() { sed -n "s/^$1:[[:space:]]*\([0-9]*\).*/\1/p" "/proc/$pid/status"; }
mib() { python3 -c "print(f'{$1 / 1024:.1f}')"; }

# measure MODE STATE KIND EXTRA COUNTS...: sends up to each count in turn, prints a row each.
measure() {
    local mode=$1 state=$2 kind=$3 extra=$4 sent=0 first_rss='' n rss hwm threads parts runs ratio
    shift 4
    for n in "$@"; do
        python3 "$tmp/send.py" "$addr" "$SECRET" "$kind" "$sent" "$n" "$SENDERS" "$extra"
        sent=$n
        wait_for "$state" "$n" "SELECT COUNT(*) FROM inbox WHERE state = 'done'"
        if [ "$kind" = runs ]; then
            wait_for "$state" 0 "SELECT COUNT(*) FROM runs WHERE finished_at IS NULL"
        fi
        sleep "$SETTLE"
        runs=$(sqlite3 "$state/ledger.sqlite3" "SELECT COUNT(*) FROM runs")
        rss=$(kib VmRSS)
        hwm=$(kib VmHWM)
        threads=$(kib Threads)
        parts="$(mib "$(kib RssAnon)") / $(mib "$(kib RssFile)") / $(mib "$(kib RssShmem)")"
        first_rss=${first_rss:-$rss}
        ratio=$(python3 -c "print(f'{$rss / $first_rss:.2f}')")
        echo "| $mode | $n | $runs | $(mib "$rss") | $parts | $(mib "$hwm") | $threads | ${ratio}x |"
    done
}

echo "| server | deliveries | runs | VmRSS MiB | anon / file / shmem MiB | VmHWM MiB | threads | VmRSS / VmRSS at the first count |"
echo "|---|---|---|---|---|---|---|---|"

# serve --no-run
git init -q "$tmp/empty"
start "$tmp/no-run.log" env "HOOK_SECRET=$SECRET" target/release/gitops serve \
    --listen 127.0.0.1:0 --repo "$tmp/empty" --state "$tmp/no-run" --no-run \
    --github-secret-env HOOK_SECRET --repo-name Codertocat/Hello-World
# shellcheck disable=SC2086
measure "serve --no-run" "$tmp/no-run" fixture "$FIXTURE" $NO_RUN
kill "$pid"

# serve with runs of a 3-stage pipeline
repo=$tmp/served
git init -q -b main "$repo"
cat >"$repo/.gitops.yml" <<'EOF'
version: 1
pipelines:
  main:
    on: { push: { branches: [main] } }
    stages:
      build: { backend: local, run: "true" }
      test: { backend: local, needs: [build], run: "true" }
      ship: { backend: local, needs: [test], run: "true" }
EOF
commits=()
for i in $(seq "$COMMITS"); do
    echo "$i" >"$repo/file.txt"
    git -C "$repo" add -A
    git -C "$repo" -c user.name=rss -c user.email=rss@example.com commit -qm "commit $i"
    commits+=("$(git -C "$repo" rev-parse HEAD)")
done
start "$tmp/runs.log" env "HOOK_SECRET=$SECRET" target/release/gitops serve \
    --listen 127.0.0.1:0 --repo "$repo" --state "$tmp/runs" \
    --github-secret-env HOOK_SECRET --repo-name o/served
# shellcheck disable=SC2086
measure "serve, 3-stage runs" "$tmp/runs" runs "$(IFS=,; echo "${commits[*]}")" $RUNS
kill "$pid"
