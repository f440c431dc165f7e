#!/usr/bin/env bash
# End-to-end signing benchmark: two cosignerd (own swtpm each) in a 2-of-3 vault with a
# device party that coordinates without signing; prints p50/p95/p99 latency and signatures
# per second beside the engine's in-process 2-of-3 signing time measured in the same run.
# Usage: PROFILE=release scripts/bench-sign.sh [COUNT] [CONCURRENCY]   (defaults 500, 32)
# (PROFILE=release for figures worth quoting; the debug build leaves our crates unoptimised.)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
source scripts/cluster.sh
COUNT="${1:-500}"
CONC="${2:-32}"
party device-1 init --name device-1 >/dev/null
party device-2 init --name device-2 >/dev/null
D1=$(party device-1 show --json | jget party_id)
D2=$(party device-2 show --json | jget party_id)
make_policy
start_daemon server-a "$PORT" "$((PORT + 100))"
start_daemon server-b "$((PORT + 1))" "$((PORT + 110))"
A="https://127.0.0.1:$PORT"; B="https://127.0.0.1:$((PORT + 1))"
party device-1 keygen --vault bench --threshold 2 --member "$(spec server-a "$A")" \
  --member "$(spec server-b "$B")" --daemon "server-a=$A" --daemon "server-b=$B" >/dev/null
"$BIN/cosignerctl" --certs "$CERTS" --as device-1 bench sign \
  --file "$WORK/devices/device-1.party" --passphrase-file "$WORK/devices/pass" \
  --vault bench --count "$COUNT" --concurrency "$CONC" --daemon "server-a=$A" --daemon "server-b=$B"
