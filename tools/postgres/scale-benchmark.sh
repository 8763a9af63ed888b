#!/usr/bin/env bash
# Throughput of `flux serve --role api` + N `--role worker` processes (--demo) over one PostgreSQL database, for each
# N given: a fresh database, the nodes started, PREDICTIONS predictions sent at once with `Prefer: wait`, the wall
# time from the first send to the last answer. Side by side in one run, so the numbers compare with each other (not
# with another machine's).
#
#   tools/postgres/scale-benchmark.sh POSTGRES_URL [N ...]     e.g. postgres://postgres@127.0.0.1:5432/postgres 1 2 3
#   PREDICTIONS=60 SIZE=128 STEPS=6 (defaults); flux.dll from FLUX_DLL or the server tests' build output.
#   WORKER_ARGS="--threads 1": more options for each worker.
set -euo pipefail
admin=$1; shift
counts=("${@:-1 2 3}")
predictions=${PREDICTIONS:-60}; size=${SIZE:-128}; steps=${STEPS:-6}
flux=${FLUX_DLL:-$(cd "$(dirname "$0")/../.." && pwd)/tests/FluxNative.Server.Tests/bin/Release/net10.0/flux.dll}
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wait_ready() {
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$1/readyz" > /dev/null && return 0
    sleep 0.1
  done
  echo "node on port $1 never became ready" >&2; return 1
}

port=$(( 30000 + RANDOM % 20000 ))
for n in ${counts[@]}; do
  db="flux_bench_${n}_$$"
  psql "$admin" -qc "CREATE DATABASE $db" > /dev/null
  address="${admin%/*}/$db"
  api_port=$port; port=$((port + 1))
  dotnet "$flux" serve --demo --insecure-no-auth --role api --queue-size 100000 --database "$address" \
    --output-dir "$work/out" --urls "http://127.0.0.1:$api_port" > "$work/api-$n.log" 2>&1 &
  pids+=($!)
  wait_ready "$api_port"
  for w in $(seq 1 "$n"); do
    dotnet "$flux" serve --demo --insecure-no-auth --role worker --database "$address" --output-dir "$work/out" \
      --urls "http://127.0.0.1:$port" --worker-id "w$w" ${WORKER_ARGS:-} > "$work/worker-$n-$w.log" 2>&1 &
    pids+=($!)
    wait_ready "$port"; port=$((port + 1))
  done
  start=$(date +%s.%N)
  sends=()
  for i in $(seq 1 "$predictions"); do
    curl -s "http://127.0.0.1:$api_port/v1/models/black-forest-labs/flux-dev/predictions" -H 'Content-Type: application/json' \
      -H 'Prefer: wait' -d "{\"input\":{\"prompt\":\"fox $i\",\"image_size\":$size,\"num_inference_steps\":$steps,\"seed\":$i}}" \
      -o "$work/reply-$n-$i.json" &
    sends+=($!)
  done
  wait "${sends[@]}"
  end=$(date +%s.%N)
  ok=$(grep -l '"status":"succeeded"' "$work"/reply-"$n"-*.json | wc -l)
  echo "$n worker(s): $ok/$predictions succeeded in $(echo "$end - $start" | bc) s ($(echo "scale=2; $ok / ($end - $start)" | bc) predictions/s)"
  for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2> /dev/null || true; done
  pids=()
  psql "$admin" -qc "DROP DATABASE $db WITH (FORCE)" > /dev/null
done
