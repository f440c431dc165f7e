#!/usr/bin/env bash
# The quickstart: from a fresh clone to a working 2-of-3 vault on this machine, using the
# files an operator deploys (deploy/provision.sh, deploy/policies/development) and printing
# what happens at each step. Two co-signer daemons, each with its own software TPM (swtpm:
# there is no need for a TPM chip to try it), and one user device played by cosignerctl.
#
#   bash deploy/quickstart.sh
#
# Installs missing system packages (apt-get), builds release binaries (a few minutes the
# first time), and leaves everything in a temporary folder it names at the end. Stops the
# daemons when it ends. QUICKSTART_BIN=DIR uses binaries already built there instead;
# QUICKSTART_DIR and QUICKSTART_PORT choose the folder and the first port (7 are used).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
if [ -t 1 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD="" PLAIN=""; fi
step() { printf '\n%s[%3ds] %s%s\n' "$BOLD" "$((SECONDS - started))" "$*" "$PLAIN"; }

step "1/9 system packages (apt-get, only what is missing) and the Rust build"
source scripts/setup.sh
if [ -n "${QUICKSTART_BIN:-}" ]; then
  BIN=$QUICKSTART_BIN
  echo "using the binaries in $BIN"
else
  cargo build --release --locked --bins -q
  BIN="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release"
  echo "built $BIN/cosignerd and $BIN/cosignerctl"
fi
WORK=${QUICKSTART_DIR:-$(mktemp -d -t cosigner-quickstart-XXXXXX)}
mkdir -p "$WORK"
P=${QUICKSTART_PORT:-27443}
A_PORT=$P; B_PORT=$((P + 1)); A_METRICS=$((P + 2)); B_METRICS=$((P + 3))
A_TPM=$((P + 10)); B_TPM=$((P + 20))
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
jget() { grep -o "\"$1\": *\"[^\"]*\"" | head -1 | sed 's/.*: *"\(.*\)"/\1/'; }
ctl() { "$BIN/cosignerctl" --certs "$WORK/certs" "$@"; }

step "2/9 certificates: a development CA, two daemons, an operator (admin) and a device"
ctl certs init --dir "$WORK/certs" --daemon server-a --daemon server-b --admin admin --party device-1

step "3/9 the device party: its keys in a passphrase-encrypted file"
echo "quickstart passphrase, not for real use" > "$WORK/passphrase"
party() { ctl --as device-1 party --file "$WORK/device-1.party" --passphrase-file "$WORK/passphrase" "$@"; }
party init --name device-1
D1=$(party show --json | jget party_id)
echo "device-1's party id: $D1"

step "4/9 provision both daemons' configuration (deploy/provision.sh), development policy"
# The development bundle lets its operators run keygen and committee members sign.
mkdir -p "$WORK/policy"
cp deploy/policies/development/*.rego "$WORK/policy/"
sed "s/\"operators\": {}/\"operators\": {\"$D1\": true}/" deploy/policies/development/data.json > "$WORK/policy/data.json"
COSIGNERD="$BIN/cosignerd" bash deploy/provision.sh --certs "$WORK/certs" --out "$WORK/etc" \
  --policy "$WORK/policy" --data-dir data --requester "$D1" \
  --daemon server-a --listen "127.0.0.1:$A_PORT" --metrics "127.0.0.1:$A_METRICS" \
    --tcti "swtpm:host=127.0.0.1,port=$A_TPM" \
  --daemon server-b --listen "127.0.0.1:$B_PORT" --metrics "127.0.0.1:$B_METRICS" \
    --tcti "swtpm:host=127.0.0.1,port=$B_TPM"

step "5/9 start two software TPMs and the two daemons"
for spec in "server-a $A_PORT $A_TPM" "server-b $B_PORT $B_TPM"; do
  set -- $spec
  mkdir -p "$WORK/tpm-$1"
  swtpm socket --tpm2 --tpmstate dir="$WORK/tpm-$1" \
    --server type=tcp,port="$3",bindaddr=127.0.0.1 --ctrl type=tcp,port=$(($3 + 1)),bindaddr=127.0.0.1 \
    --flags not-need-init,startup-clear &
  PIDS+=($!)
done
sleep 0.3
for spec in "server-a $A_PORT" "server-b $B_PORT"; do
  set -- $spec
  "$BIN/cosignerd" --config "$WORK/etc/$1/cosignerd.toml" 2>"$WORK/$1.log" &
  PIDS+=($!)
  for i in $(seq 150); do
    ctl --addr "https://127.0.0.1:$2" health >/dev/null 2>&1 && break
    [ "$i" = 150 ] && { cat "$WORK/$1.log"; echo "$1 did not start"; exit 1; }
    sleep 0.1
  done
  echo "$1 serves on 127.0.0.1:$2 (log: $WORK/$1.log)"
done
A="https://127.0.0.1:$A_PORT"; B="https://127.0.0.1:$B_PORT"
ctl --addr "$A" status

step "6/9 keygen: a 2-of-3 vault of device-1, server-a and server-b"
member() { local s; s=$(ctl --addr "$2" status --json); echo "$1:$(echo "$s" | jget party_id):$(echo "$s" | jget encryption_key)"; }
DAEMONS=(--daemon "server-a=$A" --daemon "server-b=$B")
party keygen --vault quickstart --threshold 2 --member "$(member server-a "$A")" --member "$(member server-b "$B")" "${DAEMONS[@]}"

step "7/9 sign a message with device-1 + server-a; OpenSSL checks the signature"
out=$(party sign --vault quickstart --message "hello from the quickstart" --signer device-1 --signer server-a "${DAEMONS[@]}" --json)
echo "$out"
perl -e 'print pack("H*", shift)' "3036301006072a8648ce3d020106052b8104000a032200$(echo "$out" | jget public_key)" > "$WORK/pub.der"
openssl pkey -pubin -inform DER -in "$WORK/pub.der" -out "$WORK/pub.pem" 2>/dev/null
perl -e 'print pack("H*", shift)' "$(echo "$out" | jget hash)" > "$WORK/hash.bin"
perl -e 'print pack("H*", shift)' "$(echo "$out" | jget der)" > "$WORK/sig.der"
openssl pkeyutl -verify -pubin -inkey "$WORK/pub.pem" -in "$WORK/hash.bin" -sigfile "$WORK/sig.der"

step "8/9 what the operator sees: status and history of server-a"
ctl --addr "$A" status
ctl --addr "$A" history list --limit 5
ctl --addr "$A" history verify

step "9/9 what monitoring sees: server-a's metrics (Prometheus text format)"
curl -fsS "http://127.0.0.1:$A_METRICS/metrics" | grep -E '^cosigner_(ceremonies_total|policy_decisions_total|tpm_operation_duration_seconds_count|history_entries|relay_sessions|vaults)[{ ]'

printf '\nquickstart: done in %d s. Everything is in %s (configs in etc/, logs beside them).\n' "$((SECONDS - started))" "$WORK"
echo "quickstart: the daemons stop now; run them again with: $BIN/cosignerd --config $WORK/etc/server-a/cosignerd.toml (after starting its swtpm)"
