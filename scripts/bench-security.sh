#!/usr/bin/env bash
# What TLS and a token cost (issue #10): two `herald serve` processes on this machine, one
# plaintext and anonymous, one with --auth token and TLS (a CA and certificate made here with
# openssl), and `herald bench` against each in turn, RUNS times, at the maximum rate and at a
# fixed rate. Prints the medians of each and their ratio.
#
# Usage: scripts/bench-security.sh        Environment: RUNS [3] DURATION [5s] WARMUP [1s]
#        HERALD_BIN [built here, release]  BENCH_DIR [target/bench]  PAYLOAD [100]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
PAYLOAD=${PAYLOAD:-100}
BENCH_DIR=${BENCH_DIR:-$PWD/target/bench}
if [ -z "${HERALD_BIN:-}" ]; then
  cargo build --release -p herald-cli
  HERALD_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/herald"
fi
command -v openssl >/dev/null || { echo "openssl is needed to make the test certificates" >&2; exit 1; }
mkdir -p "$BENCH_DIR"
work=$(mktemp -d "$BENCH_DIR/security.XXXXXX")
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT

# A CA and a certificate for localhost it signed.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/ca.key" -out "$work/ca.pem" -days 1 -subj /CN=bench-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$work/server.key" -out "$work/server.csr" -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$work/san.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 1 \
  -extfile "$work/san.ext" -out "$work/server.pem" 2>/dev/null

# Starts a server; prints its gRPC port.
start() {
  local dir=$1; shift
  env -u HERALD_BIN HERALD_LOG=warn "$HERALD_BIN" serve --data-dir "$dir" --http 127.0.0.1:0 --grpc 127.0.0.1:0 "$@" >"$dir.out" 2>"$dir.err" &
  pids+=($!)
  for _ in $(seq 100); do
    if grep -q "herald listening" "$dir.out" 2>/dev/null; then
      grep -o 'grpcs\?://[0-9.:]*' "$dir.out" | sed 's/.*://'
      return
    fi
    sleep 0.1
  done
  echo "the server in $dir did not start: $(cat "$dir.err")" >&2
  exit 1
}
token=$("$HERALD_BIN" token create --data-dir "$work/secure" --name bench --allow '*:*' 2>/dev/null)
plain_port=$(start "$work/plain")
secure_port=$(start "$work/secure" --auth token --tls-cert "$work/server.pem" --tls-key "$work/server.key")
echo "== plaintext anonymous on $plain_port, TLS + token on $secure_port; $RUNS runs, $WARMUP + $DURATION each" >&2

out="$work/results.jsonl"
for run in $(seq 1 "$RUNS"); do
  for rate in 0 10000; do
    batch=$([ "$rate" = 0 ] && echo 1000 || echo 100)
    common=(--payload-bytes "$PAYLOAD" --partitions 8 --groups 1 --rate "$rate" --batch "$batch" --duration "$DURATION"
      --warmup "$WARMUP" --json)
    echo "== run $run, rate $rate" >&2
    "$HERALD_BIN" bench --url "herald://127.0.0.1:$plain_port" "${common[@]}" |
      sed "s/^{/{\"variant\":\"plain\",\"rate_cell\":$rate,/" >>"$out"
    HERALD_TOKEN=$token "$HERALD_BIN" bench --url "herald://localhost:$secure_port" --ca "$work/ca.pem" "${common[@]}" |
      sed "s/^{/{\"variant\":\"tls+token\",\"rate_cell\":$rate,/" >>"$out"
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault((r["rate_cell"], r["variant"]), []).append(r)
med = lambda rs, f: statistics.median(f(r) for r in rs)
for rate in (0, 10000):
    p, s = rows[(rate, "plain")], rows[(rate, "tls+token")]
    name = "max rate, batches of 1000" if rate == 0 else "10,000 events/s, batches of 100"
    print(f"{name}:")
    for label, f in [("published events/s", lambda r: r["published"]["events_per_s"]),
                     ("consumed events/s", lambda r: r["groups"][0]["events_per_s"]),
                     ("publish p99 ms", lambda r: r["publish_latency_us"]["p99"] / 1000),
                     ("end-to-end p50 ms", lambda r: r["e2e_latency_us"]["p50"] / 1000),
                     ("end-to-end p99 ms", lambda r: r["e2e_latency_us"]["p99"] / 1000)]:
        a, b = med(p, f), med(s, f)
        print(f"  {label:<22} plain {a:>12,.2f}   tls+token {b:>12,.2f}   ratio {b / a if a else float('nan'):.3f}")
PY
