#!/usr/bin/env bash
# Runs the `herald bench` matrix and writes one JSON line per system and run to a results file:
#
#   herald:// (a server in the bench process, --serve) with the Redis Streams peer in the same
#   command (--peer redis), and file:// (the broker in the bench process), for
#   payload 100 B and 1 KiB × 1 and 8 partitions × 1 and 4 groups × max rate and 10,000 events/s,
#   each RUNS times (3) so that medians can be taken. About 40 minutes with the defaults.
#
# Usage:
#   scripts/bench-server.sh                    # build (release), run the matrix, print medians
#   scripts/bench-server.sh --summary FILE     # print the medians of an earlier results file
#
# Environment (defaults in brackets):
#   RUNS [3]  DURATION [10s]  WARMUP [2s]  DURABILITY [always]: herald topics' always|interval|os
#   REDIS_APPENDFSYNC [unset]: unset runs Redis as it comes (no AOF, no fsync: say so when quoting);
#                      always|everysec|no turns on its append-only file with that fsync policy
#   OUT [target/bench/bench-server-<UTC time>.jsonl]   HERALD_BIN [built here, release]
#   BENCH_DIR [target/bench]: file:// data, and TMPDIR for --serve's and redis-server's data, so
#                      that everything is written to the same disk (not a tmpfs /tmp)
#   BENCH_PAYLOADS [100 1024]  BENCH_PARTITIONS [1 8]  BENCH_GROUPS [1 4]
#   BENCH_RATES [0 10000]: the matrix (0 = max rate)   BATCH [100]: events per publish call
#   ORDERING [key]: the herald groups' delivery order, key|partition|none (Redis Streams: none)
#   BENCH_NATS [unset]: set to 1 to add nats:// to every cell: a nats-server (HERALD_NATS_SERVER,
#                      else target/tools/nats/bin/nats-server, else PATH) started for the run with
#                      JetStream's `sync_interval: always`, its store under BENCH_DIR
#
# Each line is `herald bench --json` output plus "run" (1..RUNS), "cell" (the matrix cell),
# "backend" (herald-serve, herald-file or redis) and "commit". Run it on a quiet machine: nothing
# else should compete for the CPU or the disk.
set -euo pipefail
cd "$(dirname "$0")/.."

summary() {
  python3 - "$1" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault((r["cell"], r["backend"]), []).append(r)
def med(rs, f):
    vals = [f(r) for r in rs]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None
def fmt(v, unit=""):
    return "-" if v is None else (f"{v:,.0f}{unit}" if v >= 100 else f"{v:.3g}{unit}")
print(f"{'cell':<28} {'backend':<13} {'runs':>4} {'pub ev/s':>11} {'MB/s':>7} {'cons ev/s/grp':>13} "
      f"{'pub p99 ms':>10} {'e2e p50 ms':>10} {'e2e p99 ms':>10} {'e2e p99.9':>10} {'peak MiB':>9} {'err':>4}")
for (cell, backend), rs in sorted(rows.items()):
    lat = lambda k, q: (lambda r: r[k][q] / 1000 if r.get(k) else None)
    cons = med(rs, lambda r: min(g["events_per_s"] for g in r["groups"]) if r["groups"] else None)
    print(f"{cell:<28} {backend:<13} {len(rs):>4} {fmt(med(rs, lambda r: r['published']['events_per_s'])):>11} "
          f"{fmt(med(rs, lambda r: r['published']['mb_per_s'])):>7} {fmt(cons):>13} "
          f"{fmt(med(rs, lat('publish_latency_us', 'p99'))):>10} {fmt(med(rs, lat('e2e_latency_us', 'p50'))):>10} "
          f"{fmt(med(rs, lat('e2e_latency_us', 'p99'))):>10} {fmt(med(rs, lat('e2e_latency_us', 'p99_9'))):>10} "
          f"{fmt(med(rs, lambda r: (r['peak_memory_bytes'] or 0) / 2**20)):>9} "
          f"{sum(r['errors'] for r in rs) + sum(0 if r['drained'] else 1 for r in rs):>4}")
print("medians over runs; cons ev/s/grp is the slowest group's; err counts errors and runs that did not drain")
PY
}

if [ "${1:-}" = "--summary" ]; then
  summary "${2:?usage: $0 --summary FILE}"
  exit 0
fi

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
DURABILITY=${DURABILITY:-always}
BENCH_DIR=${BENCH_DIR:-$PWD/target/bench}
BENCH_PAYLOADS=${BENCH_PAYLOADS:-100 1024}
BENCH_PARTITIONS=${BENCH_PARTITIONS:-1 8}
BENCH_GROUPS=${BENCH_GROUPS:-1 4}
BENCH_RATES=${BENCH_RATES:-0 10000}
BATCH=${BATCH:-100}
ORDERING=${ORDERING:-key}
mkdir -p "$BENCH_DIR"
OUT=${OUT:-$BENCH_DIR/bench-server-$(date -u +%Y%m%dT%H%M%SZ).jsonl}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD 2>/dev/null; then commit="$commit+dirty"; fi

if [ -z "${HERALD_BIN:-}" ]; then
  cargo build --release -p herald-cli
  HERALD_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/herald"
fi
command -v redis-server >/dev/null || { echo "redis-server is not on PATH (Debian: apt-get install redis-server)" >&2; exit 1; }

export TMPDIR="$BENCH_DIR/tmp"
mkdir -p "$TMPDIR"
data_dir=$(mktemp -d "$BENCH_DIR/file-data.XXXXXX")
trap 'rm -rf "$data_dir"' EXIT

nats_url=""
if [ -n "${BENCH_NATS:-}" ]; then
  nats_bin=${HERALD_NATS_SERVER:-$PWD/target/tools/nats/bin/nats-server}
  [ -x "$nats_bin" ] || nats_bin=$(command -v nats-server)
  nats_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  nats_dir=$(mktemp -d "$BENCH_DIR/nats.XXXXXX")
  printf 'listen: 127.0.0.1:%s\njetstream { store_dir: "%s", sync_interval: always }\n' "$nats_port" "$nats_dir" >"$nats_dir/nats.conf"
  "$nats_bin" -c "$nats_dir/nats.conf" >"$nats_dir/log" 2>&1 &
  nats_pid=$!
  trap 'kill $nats_pid 2>/dev/null; rm -rf "$data_dir" "$nats_dir"' EXIT
  sleep 1
  nats_url="nats://127.0.0.1:$nats_port"
  echo "== nats-server $("$nats_bin" --version) at $nats_url, sync_interval always" >&2
fi

redis_args=()
if [ -n "${REDIS_APPENDFSYNC:-}" ]; then redis_args=(--redis-appendfsync "$REDIS_APPENDFSYNC"); fi

# Adds run, cell, backend and commit to each JSON line of one command.
tag() {
  local run=$1 cell=$2
  while IFS= read -r line; do
    case "$line" in
      '{"system":"redis"'*) backend=redis ;;
      *'"nats://'*) backend=nats ;;
      *'(--serve)"'*) backend=herald-serve ;;
      *) backend=herald-file ;;
    esac
    printf '{"run":%s,"cell":"%s","backend":"%s","commit":"%s",%s\n' "$run" "$cell" "$backend" "$commit" "${line#\{}"
  done
}

cells=0
for _ in $BENCH_PAYLOADS; do for _ in $BENCH_PARTITIONS; do for _ in $BENCH_GROUPS; do for _ in $BENCH_RATES; do cells=$((cells + 1)); done; done; done; done
echo "== $cells cells × $RUNS runs × (herald --serve + redis, herald file://), $WARMUP + $DURATION each; results: $OUT" >&2
n=0
for run in $(seq 1 "$RUNS"); do
  for payload in $BENCH_PAYLOADS; do
    for partitions in $BENCH_PARTITIONS; do
      for groups in $BENCH_GROUPS; do
        for rate in $BENCH_RATES; do
          n=$((n + 1))
          rate_name=$([ "$rate" = 0 ] && echo max || echo "$rate")
          cell="b${payload}-p${partitions}-g${groups}-r${rate_name}"
          if [ "$ORDERING" != key ]; then cell="$cell-o$ORDERING"; fi
          common=(--payload-bytes "$payload" --partitions "$partitions" --groups "$groups" --rate "$rate"
            --duration "$DURATION" --warmup "$WARMUP" --durability "$DURABILITY" --batch "$BATCH" --ordering "$ORDERING" --json)
          echo "== [$n/$((cells * RUNS))] run $run, $cell" >&2
          # A failed command is reported and the matrix goes on; its lines are missing from OUT.
          "$HERALD_BIN" bench --serve --peer redis "${redis_args[@]}" "${common[@]}" | tag "$run" "$cell" >>"$OUT" \
            || echo "!! $cell --serve --peer redis failed" >&2
          "$HERALD_BIN" bench --url "file://$data_dir" "${common[@]}" | tag "$run" "$cell" >>"$OUT" \
            || echo "!! $cell file:// failed" >&2
          if [ -n "$nats_url" ]; then
            "$HERALD_BIN" bench --url "$nats_url" "${common[@]}" | tag "$run" "$cell" >>"$OUT" \
              || echo "!! $cell nats:// failed" >&2
          fi
        done
      done
    done
  done
done

echo "== results: $OUT" >&2
if command -v python3 >/dev/null; then summary "$OUT"; fi
