#!/usr/bin/env bash
# Cluster benchmarks of issue 20: `strata bench` (QoS 1) against a 3-node cluster and against a
# single node, in one sitting, on loopback; then the failover time. Every run starts its
# brokers fresh (temporary data directories) and stops them; every process this script starts
# is killed on exit, failure included.
#
#   benches/run-cluster.sh                 # 3 runs of each scenario, 10 s each, then failover x3
#   benches/run-cluster.sh --quick         # 1 run of each, 3 s, failover x1 (a smoke run)
#   benches/run-cluster.sh --only "a c"    # a subset of scenarios (a b c f)
#   benches/run-cluster.sh --profile       # instead: scenario a (quorum) once, with `perf record`
#                                          # on the leader, then `perf report`'s top symbols
#
# Scenarios, all QoS 1, 100-byte payloads, one stream `bench` with one partition capturing the
# load's topics (`[[streams]]`), 1 publisher and 3 subscribers (`strata bench` spreads its
# connections round-robin over its --target list: the publisher on the first, a subscriber
# on each node):
#   a  max throughput, the publisher on the partition's leader (window 1000);
#   b  as a, the publisher on a follower (the node forwards to the leader; cluster only);
#   c  a fixed 10,000 msg/s, end-to-end p50/p99 (window 1000);
#   f  failover: a light load (1,000 msg/s), `kill -9` of the partition's leader, and the time
#      until a survivor's GET /cluster/status names another leader (polled every 10 ms).
# The cluster runs each of a-c under `acks = "quorum"` and, when this build knows the key
# (`strata config check` accepts it), `acks = "leader"`; the single node runs a and c. The
# table gives medians and the cluster/single ratio from this sitting.
#
# Needs: cargo, python3, curl (and perf for --profile). STRATA_BIN=path skips the build and
# runs that binary.
set -euo pipefail

runs=3
duration=10
failovers=3
only="a b c f"
profile=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) runs=1; duration=3; failovers=1 ;;
        --runs) runs="$2"; shift ;;
        --duration) duration="$2"; shift ;;
        --failovers) failovers="$2"; shift ;;
        --only) only="$2"; shift ;;
        --profile) profile=1 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if [ -n "${STRATA_BIN:-}" ]; then
    # A binary already built (e.g. to profile exactly what a sitting measured).
    bin="$STRATA_BIN"
else
    echo "== build (release, once)"
    cargo build --release --bin strata
    bin="${CARGO_TARGET_DIR:-$root/target}/release/strata"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/strata-cluster-bench.XXXXXX")"
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -9 "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

results="$work/results.txt"
: > "$results"
failover_file="$work/failover.txt"
: > "$failover_file"

# Free loopback ports, one per line (bound then released: a race with other programs is
# possible but unlikely, and a start that fails to bind fails loudly).
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
}

# The stream every scenario publishes to: one partition, segments and retention small enough
# that a run does not fill the disk.
stream_section() {
    local acks="$1"
    printf '[[streams]]\nname = "bench"\ntopics = ["strata-bench/#"]\npartitions = 1\nsegment_bytes = 33554432\nretention_bytes = 134217728\n'
    [ -n "$acks" ] && printf 'acks = "%s"\n' "$acks"
    return 0
}

# Whether this build knows the per-stream `acks` key.
acks_supported() {
    local file="$work/acks-check.toml"
    stream_section leader > "$file"
    "$bin" config check "$file" >/dev/null 2>&1
}

# Waits (bounded) until LOG holds the MQTT ready line.
wait_ready_line() {
    local log="$1" pid="$2"
    for _ in $(seq 1 1200); do
        grep -q 'strata: MQTT listening on' "$log" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { echo "broker exited; its log:" >&2; cat "$log" >&2; return 1; }
        sleep 0.05
    done
    echo "no ready line after 60 s in $log" >&2
    return 1
}

# Starts a single node; sets single_mqtt, single_pid.
start_single() {
    local dir="$work/single"
    rm -rf "$dir"; mkdir -p "$dir"
    local ports; ports=($(free_ports 3))
    single_mqtt="127.0.0.1:${ports[0]}"
    {
        printf 'data_dir = "%s/data"\n[mqtt]\nlisten = "%s"\n[http]\nlisten = "127.0.0.1:%s"\n' \
            "$dir" "$single_mqtt" "${ports[1]}"
        printf '[grpc]\nlisten = "127.0.0.1:%s"\n[auth]\nallow_anonymous = true\n' "${ports[2]}"
        stream_section ""
    } > "$dir/strata.toml"
    "$bin" serve --config "$dir/strata.toml" > "$dir/log" 2>&1 &
    single_pid=$!
    pids+=("$single_pid")
    wait_ready_line "$dir/log" "$single_pid"
}

# Starts a 3-node cluster whose stream `bench` has the given acks ("" for the default); sets
# node_mqtt[1..3], node_http[1..3], node_pid[1..3], and waits until `bench` partition 0 has a
# leader with all three replicas in sync.
declare -A node_mqtt node_http node_pid
start_cluster() {
    local acks="$1"
    local ports; ports=($(free_ports 12))
    local peers="" id
    for id in 1 2 3; do
        peers+="\"$id@127.0.0.1:${ports[$((id * 4 - 1))]}\","
    done
    peers="[${peers%,}]"
    for id in 1 2 3; do
        local dir="$work/n$id"
        rm -rf "$dir"; mkdir -p "$dir"
        local base=$(((id - 1) * 4))
        node_mqtt[$id]="127.0.0.1:${ports[$base]}"
        node_http[$id]="127.0.0.1:${ports[$((base + 1))]}"
        {
            printf 'data_dir = "%s/data"\n[mqtt]\nlisten = "%s"\n[http]\nlisten = "%s"\n' \
                "$dir" "${node_mqtt[$id]}" "${node_http[$id]}"
            printf '[grpc]\nlisten = "127.0.0.1:%s"\n[auth]\nallow_anonymous = true\n' "${ports[$((base + 2))]}"
            printf '[cluster]\nnode_id = %s\nlisten = "127.0.0.1:%s"\npeers = %s\n' "$id" "${ports[$((base + 3))]}" "$peers"
            stream_section "$acks"
        } > "$dir/strata.toml"
    done
    for id in 1 2 3; do
        "$bin" serve --config "$work/n$id/strata.toml" > "$work/n$id/log" 2>&1 &
        node_pid[$id]=$!
        pids+=("${node_pid[$id]}")
    done
    for id in 1 2 3; do
        wait_ready_line "$work/n$id/log" "${node_pid[$id]}"
    done
    for _ in $(seq 1 600); do
        [ -n "$(bench_leader 1 3)" ] && return 0
        sleep 0.05
    done
    echo "stream bench has no leader with 3 replicas in sync after 30 s" >&2
    return 1
}

# The leader of `bench` partition 0 as node ID's /cluster/status shows it, empty while there is
# none (or while fewer than MIN_IN_SYNC replicas are in sync).
bench_leader() {
    local id="$1" min_in_sync="${2:-1}"
    curl -s --max-time 2 "http://${node_http[$id]}/cluster/status" 2>/dev/null | python3 -c '
import json, sys
try:
    doc = json.load(sys.stdin)
except Exception:
    sys.exit(0)
for p in doc.get("partitions", []):
    if p.get("stream") == "bench" and p.get("partition") == 0 and p.get("leader") is not None \
            and len(p.get("in_sync") or []) >= int(sys.argv[1]):
        print(p["leader"])
' "$min_in_sync"
}

stop_brokers() {
    local pid
    for pid in "$@"; do
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# One bench run; appends "LABEL RESULT-JSON" to the results (or "LABEL {"failed": ...}").
bench_run() {
    local label="$1" targets="$2"; shift 2
    local out="$work/bench.out"
    "$bin" bench --target "$targets" "$@" > "$out" 2> "$work/bench.err" || true
    local result; result="$(sed -n 's/^RESULT //p' "$out")"
    if [ -z "$result" ]; then
        echo "  $label: no RESULT line" >&2
        cat "$out" "$work/bench.err" >&2
        result='{"failed": "no RESULT line"}'
    fi
    echo "$label $result" >> "$results"
    python3 -c '
import json, sys
r = json.loads(sys.argv[2])
lat = r.get("latency_us", {})
print("  %-22s acked %s/s  delivered %s/s  e2e p50 %s p99 %s us  lost %s (per subscriber %s)  errors %s" % (
    sys.argv[1], round(r.get("acked", 0) / max(r.get("publish_elapsed_s", 1), 1e-9)), r.get("delivery_rate"),
    lat.get("p50"), lat.get("p99"), r.get("lost"), r.get("lost_per_subscriber"),
    len(r.get("errors", [])) if "errors" in r else r.get("failed")))
' "$label" "$result"
}

scenario_args() {
    case "$1" in
        a|b) echo "--qos 1 --publishers 1 --subscribers 3 --payload 100 --window 1000 --duration $duration" ;;
        c) echo "--qos 1 --publishers 1 --subscribers 3 --payload 100 --window 1000 --rate 10000 --duration $duration" ;;
    esac
}

acks_modes=(quorum)
if acks_supported; then
    acks_modes+=(leader)
else
    echo "note: this build has no per-stream acks key; the cluster runs under its default (quorum) only"
fi

commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "== commit $commit, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"

if [ "$profile" = 1 ]; then
    # Scenario a under the default acks, the leader sampled at 999 Hz (DWARF call graphs would
    # cost more than the broker; the release profile keeps line tables, so symbols resolve).
    start_cluster ""
    leader="$(bench_leader 1)"
    followers=()
    for id in 1 2 3; do [ "$id" != "$leader" ] && followers+=("$id"); done
    targets="${node_mqtt[$leader]},${node_mqtt[${followers[0]}]},${node_mqtt[${followers[1]}]}"
    # shellcheck disable=SC2046
    "$bin" bench --target "$targets" $(scenario_args a) --broker-pid "${node_pid[$leader]}" > "$work/bench.out" 2>&1 &
    load_pid=$!
    pids+=("$load_pid")
    sleep 1
    perf record -F 999 -g -o "$work/perf.data" -p "${node_pid[$leader]}" -- sleep "$((duration - 2 > 1 ? duration - 2 : 1))" \
        > "$work/perf.log" 2>&1
    wait "$load_pid" || true
    grep -E '^(published|delivered|end-to-end|publish)' "$work/bench.out" || true
    echo "== leader n$leader: top symbols, self time (perf report --no-children)"
    perf report -i "$work/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
        | grep -E '^ +[0-9]' | sed 's/ \{2,\}-.*$//' | head -40 || true
    echo "== by binary (dso)"
    perf report -i "$work/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -8 || true
    echo "== by thread (comm)"
    perf report -i "$work/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -10 || true
    exit 0
fi

for run in $(seq 1 "$runs"); do
    for scenario in a b c; do
        case " $only " in *" $scenario "*) ;; *) continue ;; esac
        args="$(scenario_args "$scenario")"
        if [ "$scenario" != b ]; then
            echo "== run $run, scenario $scenario, single node"
            start_single
            # shellcheck disable=SC2086
            bench_run "$scenario/single" "$single_mqtt" $args --broker-pid "$single_pid"
            stop_brokers "$single_pid"
        fi
        for acks in "${acks_modes[@]}"; do
            echo "== run $run, scenario $scenario, cluster, acks $acks"
            acks_key="$acks"
            [ "$acks" = quorum ] && [ "${#acks_modes[@]}" = 1 ] && acks_key=""
            start_cluster "$acks_key"
            leader="$(bench_leader 1)"
            followers=()
            for id in 1 2 3; do [ "$id" != "$leader" ] && followers+=("$id"); done
            if [ "$scenario" = b ]; then
                order=("${followers[0]}" "$leader" "${followers[1]}")
            else
                order=("$leader" "${followers[@]}")
            fi
            targets="${node_mqtt[${order[0]}]},${node_mqtt[${order[1]}]},${node_mqtt[${order[2]}]}"
            echo "  leader n$leader, publisher on n${order[0]}, subscribers on n${order[0]} n${order[1]} n${order[2]}"
            # shellcheck disable=SC2086
            bench_run "$scenario/$acks" "$targets" $args --broker-pid "${node_pid[$leader]}"
            stop_brokers "${node_pid[1]}" "${node_pid[2]}" "${node_pid[3]}"
        done
    done
done

# Failover: a light load, then kill -9 of the leader; a survivor's /cluster/status polled every
# 10 ms until it names another leader.
case " $only " in *" f "*) do_failover=1 ;; *) do_failover=0 ;; esac
if [ "$do_failover" = 1 ]; then
    for rep in $(seq 1 "$failovers"); do
        echo "== failover $rep"
        start_cluster ""
        leader="$(bench_leader 1)"
        followers=()
        for id in 1 2 3; do [ "$id" != "$leader" ] && followers+=("$id"); done
        # The publisher on a follower (it survives when the node forwards; otherwise its
        # publishes are refused and the figure is the election alone), a subscriber on each
        # survivor.
        targets="${node_mqtt[${followers[0]}]},${node_mqtt[${followers[1]}]}"
        "$bin" bench --target "$targets" --qos 1 --publishers 1 --subscribers 2 --payload 100 --rate 1000 \
            --duration 6 > "$work/failover-bench.out" 2>&1 &
        load_pid=$!
        pids+=("$load_pid")
        # Kill once the load is flowing: the leader's partition has grown (bounded wait).
        python3 - "${node_http[$leader]}" <<'EOF'
import json, sys, time, urllib.request
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        doc = json.load(urllib.request.urlopen(f"http://{sys.argv[1]}/cluster/status", timeout=1))
        if any(p["stream"] == "bench" and p["partition"] == 0 and p["committed"] >= 1000 for p in doc["partitions"]):
            break
    except Exception:
        pass
    time.sleep(0.05)
EOF
        # The leader is read again right before the kill, from all three nodes: leadership may
        # have moved since the load started (e.g. to the partition's preferred leader).
        python3 - "1:${node_pid[1]}:${node_http[1]}" "2:${node_pid[2]}:${node_http[2]}" \
            "3:${node_pid[3]}:${node_http[3]}" >> "$failover_file" <<'EOF'
import json, os, sys, time, urllib.request
nodes = {int(i): (int(pid), addr) for i, pid, addr in (a.split(":", 2) for a in sys.argv[1:])}

def leader_on(addr):
    try:
        doc = json.load(urllib.request.urlopen(f"http://{addr}/cluster/status", timeout=0.5))
    except Exception:
        return None
    for p in doc.get("partitions", []):
        if p.get("stream") == "bench" and p.get("partition") == 0:
            return p.get("leader")
    return None

old = None
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    seen = {leader_on(addr) for _, addr in nodes.values()}
    if len(seen) == 1 and None not in seen:
        old = seen.pop()
        break
    time.sleep(0.01)
if old is None:
    print(json.dumps({"seconds": None, "error": "the nodes did not agree on a leader within 5 s"}))
    sys.exit(0)
os.kill(nodes[old][0], 9)
t0 = time.monotonic()
survivors = [addr for i, (_, addr) in nodes.items() if i != old]
polls = 0
while time.monotonic() - t0 < 30:
    for addr in survivors:
        polls += 1
        leader = leader_on(addr)
        if leader not in (None, old):
            print(json.dumps({"seconds": round(time.monotonic() - t0, 3), "old_leader": old,
                              "new_leader": leader, "seen_on": addr, "polls": polls}))
            sys.exit(0)
    time.sleep(0.01)
print(json.dumps({"seconds": None, "old_leader": old, "error": "no new leader within 30 s", "polls": polls}))
EOF
        tail -1 "$failover_file" | sed 's/^/  /'
        wait "$load_pid" 2>/dev/null || true
        sed -n 's/^RESULT //p' "$work/failover-bench.out" | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print("  load: published %s, acked %s, lost %s, errors %s" % (r["published"], r["acked"], r["lost"], r["errors"][:2]))
'
        stop_brokers "${node_pid[1]}" "${node_pid[2]}" "${node_pid[3]}"
    done
fi

echo
echo "== raw results"
cat "$results"
cat "$failover_file"
echo
echo "== medians of $runs run(s) of $duration s (ratio: cluster / single node, same sitting)"
python3 - "$results" "$failover_file" <<'EOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, _, doc = line.strip().partition(" ")
    rows.setdefault(label, []).append(json.loads(doc))

def med(label, get):
    values = [get(r) for r in rows.get(label, []) if "failed" not in r and not r.get("errors")]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

acked_rate = lambda r: r["acked"] / r["publish_elapsed_s"]
metrics = [
    ("acked msg/s", acked_rate),
    ("delivered msg/s", lambda r: r["delivery_rate"]),
    ("e2e p50 us", lambda r: r["latency_us"].get("p50")),
    ("e2e p99 us", lambda r: r["latency_us"].get("p99")),
    ("ack p99 us", lambda r: r["ack_latency_us"].get("p99")),
]
def fmt(v):
    return "n/a" if v is None else f"{v:,.0f}"
print("| scenario | acks | metric | cluster | single node | cluster/single |")
print("|---|---|---|---|---|---|")
for scenario, name in [("a", "a max, publisher on leader"), ("b", "b max, publisher on follower"), ("c", "c 10K msg/s")]:
    for acks in ["quorum", "leader"]:
        label = f"{scenario}/{acks}"
        if label not in rows:
            continue
        failed = [r for r in rows[label] if "failed" in r or r.get("errors")]
        for metric, get in metrics:
            if scenario != "c" and metric.startswith("e2e p50"):
                continue
            if scenario == "c" and metric == "delivered msg/s":
                continue
            c = med(label, get)
            s = med(f"{scenario}/single", get) if scenario != "b" else med("a/single", get)
            ratio = f"{c / s:.2f}" if c is not None and s else "n/a"
            print(f"| {name} | {acks} | {metric} | {fmt(c)} | {fmt(s)} | {ratio} |")
        if failed:
            first = failed[0].get("failed") or failed[0]["errors"][0]
            print(f"| {name} | {acks} | runs with errors | {len(failed)} of {len(rows[label])}: {first[:80]} | | |")
fo = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
if fo:
    secs = [f["seconds"] for f in fo if f["seconds"] is not None]
    print()
    print("failover (kill -9 of the leader -> new leader on /cluster/status), s:",
          ", ".join("n/a" if f["seconds"] is None else f"{f['seconds']:.3f}" for f in fo),
          f"(median {statistics.median(secs):.3f})" if secs else "")
EOF
