#!/usr/bin/env bash
# Measures the embedded default and the cluster topology with the same
# `converge load`, beside the limits of their parts on this machine, all in
# one run, round after round:
#   - embedded: `converge dev` (SQLite, in-process caches, embedded broker);
#   - embedded-traced: the same with OpenTelemetry on, every order traced
#     and exported over OTLP/HTTP to a sink that drops the spans;
#   - nats bench: durable publishes into an R3 stream of the cluster's own 3
#     brokers (fsync always), before its load: one by one (sync), async
#     with 256 in flight, and atomic batches of 64;
#   - cluster: `converge dev --topology cluster` (3 brokers R3, 2 order and
#     2 inventory instances on PostgreSQL and Redis, 2 gateways, the load
#     balancer), then `converge check` on its databases;
#   - pgbench: the order transaction's shape (the order row and its outbox
#     row, one commit) on the same PostgreSQL, 32 clients.
# Each round starts from fresh data. Prints every round's figures, then the
# medians.
#
#   bench/topologies.sh                       # 3 rounds, 5000 orders, 32 clients
#   ROUNDS=1 ORDERS=1000 bench/topologies.sh  # a quick look
#   OUT=/tmp/bench bench/topologies.sh        # keep every report and log
#
# Needs go, jq, curl, pgbench, psql and redis-cli, PostgreSQL and Redis as
# in CI (PG and REDIS below), and natscli (installed with go install when
# missing). The machine should be otherwise quiet.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
ORDERS=${ORDERS:-5000}
CONCURRENCY=${CONCURRENCY:-32}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
REDIS=${REDIS:-redis://127.0.0.1:6379/14}
NATS_MSGS=${NATS_MSGS:-20000}

work=$(mktemp -d /tmp/converge-bench.XXXXXX)
pids=()
cleanup() {
  # TERM, not INT: a background job of a script ignores SIGINT (the
  # OTLP sink would stay); converge stops on either.
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait || true
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp -r "$work"/*-[0-9]* "$work"/*.log "$work"/*.check "$work"/*.tsv "$OUT"/ 2>/dev/null || true
    echo "reports and logs in $OUT"
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== building converge"
go build -o "$work/converge" ./cmd/converge
cv="$work/converge"
nats=$(command -v nats || true)
if [ -z "$nats" ]; then
  GOFLAGS= go install github.com/nats-io/natscli/nats@v0.5.0
  nats="$(go env GOPATH)/bin/nats"
fi

ready() { # url: wait until the load balancer answers /readyz
  for _ in $(seq 1200); do
    if curl -sf "$1/readyz" >/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$1 did not become ready" >&2; exit 1
}
halt() { # pid: stop a dev as Ctrl-C does, and wait for it
  kill -INT "$1"; wait "$1" || true
  pids=("${pids[@]/$1}")
}
load() { # name url data: one converge load, one line of figures
  "$cv" load --url "$2" --data "$3" --orders "$ORDERS" --concurrency "$CONCURRENCY" --out "$work/$1" >"$work/$1.txt"
  jq -r --arg name "$1" '[$name, (.Converged / (.ConvergeSpan / 1e9) | floor),
      (.ToFinal.P50 / 1e6 | floor), (.ToFinal.P99 / 1e6 | floor), (.Outcome.PENDING // 0)] | @tsv' "$work/$1/report.json"
}
database() { # name: a fresh PostgreSQL database
  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
}

cat >"$work/order.sql" <<'SQL'
\set n random(1, 2000000000)
BEGIN;
INSERT INTO orders (id, customer_id, status, reason, items, created_at, updated_at, accepted_at)
  VALUES (gen_random_uuid()::text, 'c-' || :n, 'PENDING', '', '[{"sku":"LOAD-1","quantity":1}]', 1, 1, 1);
INSERT INTO outbox (event_id, event_type, subject, event_subject, payload, traceparent, created_at)
  VALUES (gen_random_uuid()::text, 'io.converge.order.created', 'orders.created', 'x',
          convert_to(repeat('x', 300), 'UTF8'), '', 1);
COMMIT;
SQL

# An OTLP/HTTP sink for the traced runs: answers every export with 200.
python3 -c '
import http.server
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", 18318), Sink).serve_forever()
' &
pids+=("$!")

figures="$work/figures.tsv"
: >"$figures"
for round in $(seq "$ROUNDS"); do
  echo "== round $round of $ROUNDS"

  "$cv" dev --data "$work/e$round" --addr 127.0.0.1:18080 --broker-port 0 >"$work/e$round.log" 2>&1 &
  pid=$!; pids+=("$pid")
  ready http://127.0.0.1:18080
  line=$(load "embedded-$round" http://127.0.0.1:18080 "$work/e$round")
  "$cv" check --data "$work/e$round" >"$work/e$round.check" || { cat "$work/e$round.check"; exit 1; }
  halt "$pid"
  printf 'embedded\t%s\n' "$(cut -f2- <<<"$line")" >>"$figures"

  # The same with every order traced (the default sampler samples what the
  # load balancer starts) and exported over OTLP/HTTP to a sink that takes
  # and drops the spans: what tracing costs.
  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:18318 \
    "$cv" dev --data "$work/t$round" --addr 127.0.0.1:18080 --broker-port 0 >"$work/t$round.log" 2>&1 &
  pid=$!; pids+=("$pid")
  ready http://127.0.0.1:18080
  line=$(load "traced-$round" http://127.0.0.1:18080 "$work/t$round")
  halt "$pid"
  printf 'embedded-traced\t%s\n' "$(cut -f2- <<<"$line")" >>"$figures"

  database converge_bench_orders; database converge_bench_inventory
  redis-cli -u "$REDIS" flushdb >/dev/null
  "$cv" dev --topology cluster --data "$work/c$round" --addr 127.0.0.1:18081 \
    --order-db "$PG/converge_bench_orders" --inventory-db "$PG/converge_bench_inventory" \
    --cache "$REDIS" >"$work/c$round.log" 2>&1 &
  pid=$!; pids+=("$pid")
  ready http://127.0.0.1:18081
  for _ in $(seq 100); do # the banner follows the load balancer's start
    grep -q ' stream ls' "$work/c$round.log" && break
    sleep 0.1
  done
  read -r server user password < <(sed -n 's/.*nats --server \([^ ]*\) --user \([^ ]*\) --password \([^ ]*\) stream ls.*/\1 \2 \3/p' "$work/c$round.log")
  for mode in sync async atomic; do
    case $mode in
      sync) flags=(--dedup --msgs "$((NATS_MSGS / 10))") ;; # one at a time: a tenth is plenty
      async) flags=(--dedup --batch 256 --msgs "$NATS_MSGS") ;;
      atomic) flags=(--batch 64 --msgs "$NATS_MSGS") ;;
    esac
    "$nats" --server "$server" --user "$user" --password "$password" bench js pub "$mode" "bench.$mode" \
      --size 300 --replicas 3 --storage file --create --purge "${flags[@]}" --no-progress >"$work/nats-$mode-$round.txt" 2>&1 ||
      { cat "$work/nats-$mode-$round.txt"; exit 1; }
    rate=$(grep -m1 -o '[0-9,]* msgs/sec' "$work/nats-$mode-$round.txt" | tr -d ',' | cut -d' ' -f1)
    printf 'nats-R3-%s\t%s\n' "$mode" "$rate" >>"$figures"
    "$nats" --server "$server" --user "$user" --password "$password" stream rm -f benchstream >/dev/null 2>&1 || true
  done
  line=$(load "cluster-$round" http://127.0.0.1:18081 "$work/c$round")
  "$cv" check --order-db "$PG/converge_bench_orders" --inventory-db "$PG/converge_bench_inventory" >"$work/c$round.check" ||
    { cat "$work/c$round.check"; exit 1; }
  halt "$pid"
  printf 'cluster\t%s\n' "$(cut -f2- <<<"$line")" >>"$figures"

  rate=$(pgbench -n -c "$CONCURRENCY" -j 2 -T 15 -f "$work/order.sql" "$PG/converge_bench_orders" |
    sed -n 's/^tps = \([0-9.]*\).*/\1/p' | cut -d. -f1)
  printf 'pgbench-order-tx\t%s\n' "$rate" >>"$figures"
  column -t "$figures" | tail -n 7
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "== medians of $ROUNDS rounds ($ORDERS orders, $CONCURRENCY clients)"
printf '%-18s %12s %12s %12s\n' what "per second" "p50 ms" "p99 ms"
for what in embedded embedded-traced cluster pgbench-order-tx nats-R3-sync nats-R3-async nats-R3-atomic; do
  rows=$(awk -F'\t' -v w="$what" '$1 == w' "$figures")
  printf '%-18s %12s %12s %12s\n' "$what" \
    "$(cut -f2 <<<"$rows" | median)" "$(cut -f3 <<<"$rows" | median)" "$(cut -f4 <<<"$rows" | median)"
done
