#!/usr/bin/env bash
# What tracing costs (issue #11): `herald bench --serve` (broker and client in one process) with
# tracing off, then on — every event gets the spans an application would make (create and send in
# the producer, publish and deliver in the broker, process in the consumer), exported over
# OTLP/HTTP to a sink started here (at nice 19: what it costs is not Herald's) that answers every
# export with 200 — every event traced (on) and 1 % of them (on-1%, the parent-based ratio
# sampler), alternating, RUNS times.
# With OLD_BIN (a binary built before tracing existed) also that one, to show that off costs
# nothing. Prints the medians and their ratios.
#
# Usage: scripts/bench-tracing.sh          Environment: RUNS [3] DURATION [5s] WARMUP [1s] RATE [0: max] BATCH [1000]
#        HERALD_BIN [built here, release]  OLD_BIN [none]  BENCH_DIR [target/bench]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
RATE=${RATE:-0}
BATCH=${BATCH:-1000}
BENCH_DIR=${BENCH_DIR:-$PWD/target/bench}
if [ -z "${HERALD_BIN:-}" ]; then
  cargo build --release -p herald-cli
  HERALD_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/herald"
fi
mkdir -p "$BENCH_DIR"
work=$(mktemp -d "$BENCH_DIR/tracing.XXXXXX")
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT

# The OTLP/HTTP sink: takes every POST, counts its bytes, answers 200 with an empty response.
nice -n 19 python3 - "$work/sink.port" "$work/sink.bytes" <<'PY' &
import http.server, sys, threading
total = [0]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("content-length", 0)); self.rfile.read(n); total[0] += n
        self.send_response(200); self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(s.server_address[1]))
def report():
    while True:
        threading.Event().wait(1); open(sys.argv[2], "w").write(str(total[0]))
threading.Thread(target=report, daemon=True).start()
s.serve_forever()
PY
pids+=($!)
for _ in $(seq 50); do [ -s "$work/sink.port" ] && break; sleep 0.1; done
port=$(cat "$work/sink.port")
echo "== OTLP sink on $port; $RUNS runs of $WARMUP + $DURATION, rate $RATE" >&2

out="$work/results.jsonl"
common=(--serve --payload-bytes 100 --partitions 8 --groups 1 --rate "$RATE" --batch "$BATCH" --duration "$DURATION"
  --warmup "$WARMUP" --json)
bench() {
  local variant=$1 bin=$2; shift 2
  env -u HERALD_BIN -u OTEL_EXPORTER_OTLP_ENDPOINT "$@" "$bin" bench "${common[@]}" |
    sed "s/^{/{\"variant\":\"$variant\",/" >>"$out"
}
for run in $(seq 1 "$RUNS"); do
  echo "== run $run" >&2
  [ -n "${OLD_BIN:-}" ] && bench old "$OLD_BIN"
  bench off "$HERALD_BIN"
  otlp=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$port" OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)
  bench on "$HERALD_BIN" "${otlp[@]}"
  bench on-1% "$HERALD_BIN" "${otlp[@]}" OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.01
done
sleep 1.2
echo "== the sink received $(cat "$work/sink.bytes") bytes of OTLP" >&2
python3 - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault(r["variant"], []).append(r)
med = lambda v, f: statistics.median(f(r) for r in rows[v])
fields = [("published events/s", lambda r: r["published"]["events_per_s"]),
          ("consumed events/s", lambda r: r["groups"][0]["events_per_s"]),
          ("publish p99 ms", lambda r: r["publish_latency_us"]["p99"] / 1000),
          ("end-to-end p50 ms", lambda r: r["e2e_latency_us"]["p50"] / 1000)]
variants = [v for v in ("old", "off", "on", "on-1%") if v in rows]
print("| | " + " | ".join(variants) + " | on / off | on-1% / off |" + (" off / old |" if "old" in rows else ""))
print("| --- " * (len(variants) + 3 + ("old" in rows)) + "|")
for label, f in fields:
    m = {v: med(v, f) for v in variants}
    cells = " | ".join(f"{m[v]:,.2f}" if m[v] < 100 else f"{m[v]:,.0f}" for v in variants)
    extra = f" {m['off'] / m['old']:.2f} |" if "old" in rows else ""
    print(f"| {label} | {cells} | {m['on'] / m['off']:.2f} | {m['on-1%'] / m['off']:.2f} |{extra}")
PY
