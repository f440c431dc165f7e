#!/usr/bin/env bash
# The main job, run locally: start a software TPM, make development certificates, start
# cosignerd with them (its identity keys sealed by the TPM at first start), show
# it healthy over mutual TLS, show its status and its history, show refused clients, and
# stop it cleanly.
# Later issues extend this to swtpm + two daemons + a device party: keygen, sign, reshare.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo build --workspace --bins --locked -q
BIN="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug"
WORK="${COSIGNER_DEMO_DIR:-$(mktemp -d -t cosigner-demo-XXXXXX)}"
PORT="${COSIGNER_DEMO_PORT:-17443}"
ADDR="https://127.0.0.1:$PORT"
say() { printf '\n>>> %s\n' "$*"; }

say "a software TPM (swtpm) for this demo, state in $WORK/tpm"
mkdir -p "$WORK/tpm"
TPM_PORT=$((PORT + 100))
swtpm socket --tpm2 --tpmstate dir="$WORK/tpm" \
  --server type=tcp,port=$TPM_PORT,bindaddr=127.0.0.1 \
  --ctrl type=tcp,port=$((TPM_PORT + 1)),bindaddr=127.0.0.1 \
  --flags not-need-init,startup-clear &
TPM_PID=$!
trap 'kill $TPM_PID 2>/dev/null || true' EXIT
sleep 0.3

say "development certificates in $WORK/certs"
"$BIN/cosignerctl" certs init --dir "$WORK/certs" --force --party device-1 --party device-2

cat > "$WORK/cosignerd.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"

[tls]
ca = "certs/ca.pem"
cert = "certs/cosignerd.pem"
key = "certs/cosignerd.key"

[data]
dir = "data"

[seal]
backend = "tpm"
tcti = "swtpm:host=127.0.0.1,port=$TPM_PORT"
TOML
say "cosignerd --check-config"
"$BIN/cosignerd" --check-config "$WORK/cosignerd.toml"

say "starting cosignerd (log: $WORK/cosignerd.log)"
"$BIN/cosignerd" --config "$WORK/cosignerd.toml" 2>"$WORK/cosignerd.log" &
PID=$!
trap 'kill $PID $TPM_PID 2>/dev/null || true' EXIT
ctl() { "$BIN/cosignerctl" --addr "$ADDR" --certs "$WORK/certs" "$@"; }
for _ in $(seq 100); do
  ctl health >/dev/null 2>&1 && break
  kill -0 $PID 2>/dev/null || { cat "$WORK/cosignerd.log"; exit 1; }
  sleep 0.1
done

say "cosignerctl health (as admin)"
ctl health
say "cosignerctl status (as admin)"
ctl status
say "cosignerctl status as a party: operator-only, so refused"
ctl --as device-1 status || true
say "a client without a certificate: refused by mutual TLS"
"$BIN/cosignerctl" --addr "$ADDR" --ca "$WORK/certs/ca.pem" health || true

say "cosignerctl history list / verify: every start is recorded, hash-chained"
ctl history list
ctl history verify

say "SIGTERM"
kill -TERM $PID
wait $PID && echo "cosignerd exited with status 0"
kill $TPM_PID 2>/dev/null || true
trap - EXIT
say "daemon log"
cat "$WORK/cosignerd.log"
