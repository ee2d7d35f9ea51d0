#!/usr/bin/env bash
# End-to-end scenarios of issue 6: `strata bench` against Strata and Mosquitto 2.0, interleaved,
# each run on a freshly started broker (loopback only). Prints per-run figures, then medians,
# the Strata/Mosquitto ratio, the broker's CPU seconds (utime+stime from /proc/<pid>/stat) and
# its peak RSS (VmHWM), and last each of issue 6's targets with its verdict on those medians.
#
#   benches/run-scenarios.sh            # 3 runs of each scenario, 10 s each (~10 min)
#   benches/run-scenarios.sh --quick    # 1 run of each, 3 s (a smoke run)
#   benches/run-scenarios.sh --only "A D"   # a subset (A Ab B B' C D Dp E F)
#
# Ab is A with the load generator's own socket buffers bounded (publishers' SO_SNDBUF 64 KiB,
# subscribers' SO_RCVBUF 128 KiB): unthrottled publishers otherwise keep up to 4 MiB each
# waiting in their kernel send buffers, which counts in the latency of any broker.
#
# D also runs against examples/null_broker.rs, a relay that does no work, in the same rounds:
# its latency is the floor this machine and this load generator allow any broker in the sitting.
#
# Dp is D with the CPUs kept polling instead of halting when idle: Strata with its own
# `[runtime] idle_poll_ms = 1000`, Mosquitto and the relay with the same thing done outside
# them (one SCHED_IDLE spinning shell per CPU, `chrt --idle 0 taskset -c CPU`). Strata's
# broker CPU seconds include its pollers, shown apart; the others' do not include the shells.
#
# Needs: cargo, python3, mosquitto 2.0 (installed with apt-get when missing and running as root).
# Strata's flush policy for B' is passed with `strata serve --flush always` when serve has that
# flag, or with the arguments in $STRATA_FLUSH_ALWAYS_ARGS (e.g. "--config always.toml").
set -euo pipefail

runs=3
duration=10
only="A Ab B B' C D Dp E F"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) runs=1; duration=3 ;;
        --runs) runs="$2"; shift ;;
        --duration) duration="$2"; shift ;;
        --only) only="$2"; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

echo "== build (release, once)"
cargo build --release --bin strata --example null_broker
bin="$root/target/release/strata"
null_bin="$root/target/release/examples/null_broker"

mosquitto_bin="$(command -v mosquitto || true)"
[ -z "$mosquitto_bin" ] && [ -x /usr/sbin/mosquitto ] && mosquitto_bin=/usr/sbin/mosquitto
if [ -z "$mosquitto_bin" ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
        mosquitto_bin=/usr/sbin/mosquitto
    else
        echo "mosquitto is not installed (apt-get install mosquitto)" >&2
        exit 2
    fi
fi
mosquitto_version="$("$mosquitto_bin" -h 2>/dev/null | head -1 || true)"

# Scenario F holds 10,000 connections in both the bench and the broker.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ulimit -n 65536 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 20000 ]; then
    echo "warning: ulimit -n is $(ulimit -n); scenario F needs more than 10,000 descriptors" >&2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/strata-scenarios.XXXXXX")"

# B' runs Strata with every stream fsynced before each acknowledgement: the `[log]` default
# `flush = "always"` in a config file (override with $STRATA_FLUSH_ALWAYS_ARGS).
flush_always_args="${STRATA_FLUSH_ALWAYS_ARGS:-}"
flush_note=""
if [ -z "$flush_always_args" ]; then
    printf '[log]\nflush = "always"\n' > "$work/flush-always.toml"
    flush_always_args="--config $work/flush-always.toml"
fi
printf '[runtime]\nidle_poll_ms = 1000\n' > "$work/idle-poll.toml"
out_dir="$root/target/scenarios/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out_dir"
broker_pid=""
poller_pids=""
cleanup() {
    if [ -n "$broker_pid" ]; then kill "$broker_pid" 2>/dev/null || true; fi
    stop_external_pollers
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts a broker; sets broker_pid and broker_port.
start_strata() {
    local extra="$1"
    rm -rf "$work/strata-data"
    # The admin API and HTTP endpoint are not measured: off, so a broker already on their
    # default ports (7070, 9090) cannot stop the run.
    # shellcheck disable=SC2086 # $extra is a list of arguments
    "$bin" serve --mqtt 127.0.0.1:0 --grpc off --http off --data-dir "$work/strata-data" $extra >"$work/strata.out" 2>"$work/strata.err" &
    broker_pid=$!
    for _ in $(seq 1 200); do
        broker_port="$(sed -n 's/^strata: MQTT listening on 127.0.0.1:\([0-9][0-9]*\),.*/\1/p' "$work/strata.out" 2>/dev/null | head -1)"
        if [ -n "$broker_port" ] && kill -0 "$broker_pid" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "strata serve did not start:" >&2
    cat "$work/strata.err" >&2
    exit 1
}

start_mosquitto() {
    broker_port="$(free_port)"
    cat >"$work/mosquitto.conf" <<EOF
listener $broker_port 127.0.0.1
allow_anonymous true
set_tcp_nodelay true
persistence false
EOF
    "$mosquitto_bin" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
    broker_pid=$!
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$broker_port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "mosquitto did not start:" >&2
    cat "$work/mosquitto.log" >&2
    exit 1
}

# D's floor: a relay that does no work (examples/null_broker.rs).
start_null() {
    broker_port="$(free_port)"
    "$null_bin" --port "$broker_port" >"$work/null.out" 2>"$work/null.err" &
    broker_pid=$!
    for _ in $(seq 1 200); do
        if grep -q '^null broker on' "$work/null.out" 2>/dev/null && kill -0 "$broker_pid" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "null_broker did not start:" >&2
    cat "$work/null.err" >&2
    exit 1
}

# Dp for the brokers without an idle-poll setting: one spinner per CPU at SCHED_IDLE, which any
# other thread preempts, so a CPU never halts (what `idle_poll_ms` does inside Strata).
start_external_pollers() {
    local cpu
    for cpu in $(seq 0 $(($(nproc) - 1))); do
        chrt --idle 0 taskset -c "$cpu" sh -c 'while :; do :; done' &
        poller_pids="$poller_pids $!"
    done
}

stop_external_pollers() {
    [ -z "$poller_pids" ] && return 0
    # shellcheck disable=SC2086 # a list of pids
    kill $poller_pids 2>/dev/null || true
    # shellcheck disable=SC2086
    wait $poller_pids 2>/dev/null || true
    poller_pids=""
}

stop_broker() {
    kill -TERM "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=""
}

# CPU seconds (utime+stime) of a process.
cpu_seconds() {
    local ticks
    ticks="$(getconf CLK_TCK)"
    awk -v t="$ticks" '{ sub(/.*\) /, ""); print ($12 + $13) / t }' "/proc/$1/stat"
}

# CPU seconds of the process's `[runtime] idle_poll_ms` pollers (threads named strata-poll-N).
poller_cpu_seconds() {
    local ticks
    ticks="$(getconf CLK_TCK)"
    cat /proc/"$1"/task/*/stat 2>/dev/null |
        awk -v t="$ticks" '/\(strata-poll-[0-9]+\)/ { sub(/.*\) /, ""); sum += $12 + $13 } END { print sum / t + 0 }'
}

peak_rss_kib() {
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"
}

# Prints one run's figures (a line of runs.jsonl on stdin).
show_run='
import json, sys
r = json.loads(sys.stdin.read())
lat = r.get("latency_us") or r.get("connect_latency_us") or {}
mode = r.get("mode")
if mode == "pubsub":
    figure = "delivered %s msg/s (published %s/s, lost %s, duplicates %s)" % (r.get("delivery_rate"), r.get("publish_rate"), r.get("lost"), r.get("duplicates"))
elif mode == "connect-rate":
    figure = "%s connects/s (%s ok, %s failed)" % (r.get("connect_rate"), r.get("connected"), r.get("failed"))
elif mode == "idle":
    figure = "%s B RSS per connection (%s held)" % ((r.get("idle_rss") or {}).get("rss_per_connection_bytes"), r.get("held"))
else:
    figure = "no result"
if r.get("errors"):
    figure += "; first error: %s" % r["errors"][0]
pollers = " (%s s of it in idle pollers)" % r["broker_poller_cpu_s"] if r.get("broker_poller_cpu_s") else ""
print("  %-2s %-9s #%s: %s; latency p50 %s p99 %s max %s us; broker CPU %s s%s, peak RSS %s KiB" % (r["scenario"], r["broker"], r["rep"], figure, lat.get("p50"), lat.get("p99"), lat.get("max"), r["broker_cpu_s"], pollers, r["broker_peak_rss_kib"]))
'

scenario_args() {
    case "$1" in
        A) echo "--qos 0 --publishers 4 --subscribers 4 --payload 100 --duration $duration" ;;
        Ab) echo "--qos 0 --publishers 4 --subscribers 4 --payload 100 --sndbuf 65536 --rcvbuf 131072 --duration $duration" ;;
        B|"B'") echo "--qos 1 --publishers 4 --subscribers 4 --payload 100 --duration $duration" ;;
        C) echo "--qos 0 --publishers 1 --subscribers 100 --payload 100 --rate 1000 --duration $duration" ;;
        D|Dp) echo "--qos 1 --publishers 1 --subscribers 1 --payload 100 --rate 100 --duration $duration" ;;
        E) echo "--connect-rate --connections 5000 --inflight 50 --duration $duration" ;;
        F) echo "--idle 10000 --duration $duration" ;;
    esac
}

# One run: start the broker, bench it, record the RESULT line plus CPU seconds and peak RSS.
run_one() {
    local scenario="$1" broker="$2" rep="$3"
    case "$broker:$scenario" in
        "strata:B'") start_strata "$flush_always_args" ;;
        strata:Dp) start_strata "--config $work/idle-poll.toml" ;;
        strata:*) start_strata "" ;;
        mosquitto:*) start_mosquitto ;;
        null:*) start_null ;;
    esac
    if [ "$scenario" = Dp ] && [ "$broker" != strata ]; then start_external_pollers; fi
    local cpu_before cpu_after poll_before poll_after peak args result
    cpu_before="$(cpu_seconds "$broker_pid")"
    poll_before="$(poller_cpu_seconds "$broker_pid")"
    args="$(scenario_args "$scenario")"
    # shellcheck disable=SC2086
    "$bin" bench --target "127.0.0.1:$broker_port" --broker-pid "$broker_pid" $args \
        >"$work/bench.out" 2>"$work/bench.err" || true
    cpu_after="$(cpu_seconds "$broker_pid")"
    poll_after="$(poller_cpu_seconds "$broker_pid")"
    peak="$(peak_rss_kib "$broker_pid")"
    stop_broker
    stop_external_pollers
    result="$(sed -n 's/^RESULT //p' "$work/bench.out")"
    if [ -z "$result" ]; then
        echo "  $scenario $broker #$rep: no RESULT line" >&2
        cat "$work/bench.out" "$work/bench.err" >&2
        result='{}'
    fi
    python3 - "$scenario" "$broker" "$rep" "$cpu_before" "$cpu_after" "$poll_before" "$poll_after" "$peak" "$result" >>"$out_dir/runs.jsonl" <<'PY'
import json, sys
scenario, broker, rep, before, after, poll_before, poll_after, peak, result = sys.argv[1:]
r = json.loads(result)
r.update(scenario=scenario, broker=broker, rep=int(rep), broker_cpu_s=round(float(after) - float(before), 2), broker_peak_rss_kib=int(peak))
# The idle pollers' share of broker_cpu_s (Strata with idle_poll_ms only).
r.update(broker_poller_cpu_s=round(float(poll_after) - float(poll_before), 2))
print(json.dumps(r))
PY
    tail -n 1 "$out_dir/runs.jsonl" | python3 -c "$show_run"
}

echo "== machine"
echo "  $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(free -g | awk '/^Mem:/ { print $2 " GiB RAM" }'); $(uname -sr)"
echo "  load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  strata: $("$bin" --version); mosquitto: $mosquitto_version"
echo "  runs per scenario: $runs, duration $duration s; raw results in $out_dir/runs.jsonl"
[ -n "$flush_note" ] && echo "  NOTE: $flush_note"

for rep in $(seq 1 "$runs"); do
    for scenario in $only; do
        if [ "$scenario" = "B'" ]; then
            # Mosquitto never fsyncs: B' compares with its B runs.
            [ -n "$flush_note" ] && continue
            run_one "$scenario" strata "$rep"
            continue
        fi
        run_one "$scenario" strata "$rep"
        run_one "$scenario" mosquitto "$rep"
        if [ "$scenario" = D ] || [ "$scenario" = Dp ]; then run_one "$scenario" null "$rep"; fi
    done
    echo "  load average after round $rep: $(cut -d' ' -f1-3 /proc/loadavg)"
done

echo "== medians (Strata / Mosquitto)"
python3 - "$out_dir/runs.jsonl" "$flush_note" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
note = sys.argv[2]
def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
def pick(scenario, broker, get):
    return med([get(r) for r in runs if r.get("scenario") == scenario and r.get("broker") == broker])
def fmt(v):
    if v is None: return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
metrics = {
    "A": [("delivered msg/s", lambda r: r.get("delivery_rate"), "higher"), ("e2e p99 us", lambda r: (r.get("latency_us") or {}).get("p99"), "lower")],
    "Ab": [("delivered msg/s", lambda r: r.get("delivery_rate"), "higher"), ("e2e p50 us", lambda r: (r.get("latency_us") or {}).get("p50"), "lower"), ("e2e p99 us", lambda r: (r.get("latency_us") or {}).get("p99"), "lower")],
    "B": [("delivered msg/s", lambda r: r.get("delivery_rate"), "higher"), ("e2e p99 us", lambda r: (r.get("latency_us") or {}).get("p99"), "lower")],
    "B'": [("delivered msg/s", lambda r: r.get("delivery_rate"), "higher"), ("e2e p99 us", lambda r: (r.get("latency_us") or {}).get("p99"), "lower")],
    "C": [("e2e p50 us", lambda r: (r.get("latency_us") or {}).get("p50"), "lower"), ("e2e p99 us", lambda r: (r.get("latency_us") or {}).get("p99"), "lower"), ("delivered msg/s", lambda r: r.get("delivery_rate"), "higher")],
    "D": [("e2e p50 us", lambda r: (r.get("latency_us") or {}).get("p50"), "lower"), ("e2e p99 us", lambda r: (r.get("latency_us") or {}).get("p99"), "lower")],
    "Dp": [("e2e p50 us", lambda r: (r.get("latency_us") or {}).get("p50"), "lower"), ("e2e p99 us", lambda r: (r.get("latency_us") or {}).get("p99"), "lower")],
    "E": [("connects/s", lambda r: r.get("connect_rate"), "higher"), ("connect p99 us", lambda r: (r.get("connect_latency_us") or {}).get("p99"), "lower")],
    "F": [("RSS B/connection", lambda r: (r.get("idle_rss") or {}).get("rss_per_connection_bytes"), "lower")],
}
print(f"| scenario | metric | Strata | Mosquitto | Strata/Mosquitto | lost S/M | CPU s S/M | peak RSS MiB S/M |")
print(f"|---|---|---|---|---|---|---|---|")
for scenario, rows in metrics.items():
    if not any(r.get("scenario") == scenario for r in runs):
        if scenario == "B'" and note: print(f"| B' | skipped: {note} | | | | | | |")
        continue
    mosq = "B" if scenario == "B'" else scenario
    for name, get, better in rows:
        s, m = pick(scenario, "strata", get), pick(mosq, "mosquitto", get)
        ratio = f"{s / m:.2f}" if s is not None and m else "-"
        lost = f"{fmt(pick(scenario, 'strata', lambda r: r.get('lost')))}/{fmt(pick(mosq, 'mosquitto', lambda r: r.get('lost')))}"
        cpu = f"{fmt(pick(scenario, 'strata', lambda r: r.get('broker_cpu_s')))}/{fmt(pick(mosq, 'mosquitto', lambda r: r.get('broker_cpu_s')))}"
        rss = lambda b, sc: pick(sc, b, lambda r: r.get("broker_peak_rss_kib"))
        rs, rm = rss("strata", scenario), rss("mosquitto", mosq)
        rss_s = f"{rs / 1024:.1f}/{rm / 1024:.1f}" if rs and rm else "-"
        label = scenario + (" (vs Mosquitto B)" if scenario == "B'" else "")
        print(f"| {label} | {name} ({better} is better) | {fmt(s)} | {fmt(m)} | {ratio} | {lost} | {cpu} | {rss_s} |")
for scenario in ("D", "Dp"):
    floor = [r for r in runs if r.get("scenario") == scenario and r.get("broker") == "null"]
    if not floor:
        continue
    p50 = lambda r: (r.get("latency_us") or {}).get("p50")
    p99 = lambda r: (r.get("latency_us") or {}).get("p99")
    print()
    print(f"{scenario}'s floor, a relay that does no work (examples/null_broker.rs), same tool and rounds: "
          f"e2e p50 {fmt(med([p50(r) for r in floor]))} us (runs: {', '.join(str(p50(r)) for r in floor)}), "
          f"p99 {fmt(med([p99(r) for r in floor]))} us")

# Issue 6's targets, judged on the medians above.
def strata(scenario, get): return pick(scenario, "strata", get)
def mosquitto(scenario, get): return pick(scenario, "mosquitto", get)
rate = lambda r: r.get("delivery_rate")
lat = lambda key: (lambda r: (r.get("latency_us") or {}).get(key))
ratio = lambda s, m: s / m if s is not None and m else None
targets = [
    ("A delivered, Strata/Mosquitto", ratio(strata("A", rate), mosquitto("A", rate)), ">=", 1.5, "{:.2f}"),
    ("A broker peak RSS MiB", (strata("A", lambda r: r.get("broker_peak_rss_kib")) or 0) / 1024 or None, "<", 256, "{:.1f}"),
    ("Ab e2e p99 ms", (strata("Ab", lat("p99")) or 0) / 1000 or None, "<", 100, "{:.1f}"),
    ("B delivered, Strata/Mosquitto", ratio(strata("B", rate), mosquitto("B", rate)), ">=", 2, "{:.2f}"),
    ("B' delivered, Strata/Mosquitto B", ratio(strata("B'", rate), mosquitto("B", rate)), ">=", 1, "{:.2f}"),
    ("C e2e p99, Strata/Mosquitto", ratio(strata("C", lat("p99")), mosquitto("C", lat("p99"))), "<=", 1, "{:.2f}"),
    ("D e2e p50 us", strata("D", lat("p50")), "<=", 150, "{:.0f}"),
    ("D e2e p99 us", strata("D", lat("p99")), "<=", 1000, "{:.0f}"),
    ("Dp (idle_poll_ms = 1000) e2e p50 us", strata("Dp", lat("p50")), "<=", 150, "{:.0f}"),
    ("Dp (idle_poll_ms = 1000) e2e p99 us", strata("Dp", lat("p99")), "<=", 1000, "{:.0f}"),
    ("E connects/s, Strata/Mosquitto", ratio(strata("E", lambda r: r.get("connect_rate")), mosquitto("E", lambda r: r.get("connect_rate"))), ">=", 1, "{:.2f}"),
    ("F RSS bytes per connection", strata("F", lambda r: (r.get("idle_rss") or {}).get("rss_per_connection_bytes")), "<=", 16384, "{:.0f}"),
]
checks = {">=": lambda v, t: v >= t, "<=": lambda v, t: v <= t, "<": lambda v, t: v < t}
print()
print("| issue 6 target | measured | target | verdict |")
print("|---|---|---|---|")
for name, value, op, bound, form in targets:
    if value is None:
        continue
    verdict = "met" if checks[op](value, bound) else "NOT MET"
    print(f"| {name} | {form.format(value)} | {op} {bound} | {verdict} |")
PY
echo "  load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
