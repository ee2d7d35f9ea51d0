#!/usr/bin/env bash
# Instructions a broker executes per round of scenario D, counted by callgrind.
#
# The broker runs under `valgrind --tool=callgrind` and serves the pingpong probe (one QoS 1
# PUBLISH of 100 bytes every 10 ms, delivered to one subscriber, both acknowledged) for
# SHORT rounds, then again, on a fresh broker, for LONG rounds. Start-up, connections and
# shutdown cost the same in both runs, so (LONG total - SHORT total) / (LONG - SHORT) is the
# cost of one round. The same difference per function shows where it goes.
#
#   cc -O2 -o /tmp/pingpong benches/probes/pingpong.c
#   benches/probes/d-instructions.sh target/release/strata    # or: ... mosquitto
#
# Counts are of user-space instructions (the kernel is not counted) and repeat to within a
# few per cent, which the shared machine's wall-clock figures do not.
set -euo pipefail
broker=${1:?usage: d-instructions.sh STRATA_BINARY|mosquitto [SHORT] [LONG]}
short=${2:-100}
long=${3:-600}
probe=${PINGPONG:-/tmp/pingpong}
out=$(mktemp -d /tmp/d-instructions.XXXX)
chmod 777 "$out"

run() {
    local rounds=$1 port=$((20000 + RANDOM % 10000)) data="" pid
    if [ "$broker" = mosquitto ]; then
        # `user root` keeps mosquitto from dropping to a user that cannot write the output.
        printf 'listener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\nuser root\n' \
            "$port" > "$out/mosquitto.conf"
        valgrind --tool=callgrind --callgrind-out-file="$out/$rounds.out" \
            /usr/sbin/mosquitto -c "$out/mosquitto.conf" > /dev/null 2> "$out/$rounds.err" &
    else
        data=$(mktemp -d /tmp/d-instructions-data.XXXX)
        # Only MQTT, as when these counts were first taken (the admin API and HTTP are on by default).
        valgrind --tool=callgrind --callgrind-out-file="$out/$rounds.out" \
            "$broker" serve --data-dir "$data" --mqtt "127.0.0.1:$port" --grpc off --http off > /dev/null 2> "$out/$rounds.err" &
    fi
    pid=$!
    # Under valgrind the broker takes seconds to start listening.
    sleep 10
    "$probe" "$port" "$rounds" 10000 >&2
    sleep 1
    kill "$pid"
    wait "$pid" || true
    [ -n "$data" ] && rm -rf "$data"
    awk '/^summary:/ { print $2 }' "$out/$rounds.out"
}

short_total=$(run "$short")
long_total=$(run "$long")
echo "instructions per round: $(( (long_total - short_total) / (long - short) ))" \
    "(totals $short_total for $short rounds, $long_total for $long; profiles in $out)"
