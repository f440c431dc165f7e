#!/usr/bin/env bash
# Shared by demo.sh and bench-sign.sh: build, then helpers to run daemons (each with its own
# swtpm) and device parties locally. Source it; it sets BIN, WORK, PORT, CERTS and traps EXIT.
# PROFILE=release builds and runs optimised binaries (for benchmarks); default: debug.
PROFILE="${PROFILE:-debug}"
if [ "$PROFILE" = release ]; then
  cargo build --workspace --bins --locked -q --release
else
  cargo build --workspace --bins --locked -q
fi
BIN="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/$PROFILE"
WORK="${DEMO_DIR:-$(mktemp -d -t cosigner-demo-XXXXXX)}"
PORT="${DEMO_PORT:-17443}"
say() { printf '\n>>> %s\n' "$*"; }
# The first string value of key $1 in the JSON on stdin (enough for our flat outputs).
jget() { grep -o "\"$1\": *\"[^\"]*\"" | head -1 | sed 's/.*: *"\(.*\)"/\1/'; }
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

CERTS="$WORK/certs"
"$BIN/cosignerctl" certs init --dir "$CERTS" --force --party device-1 --party device-2 >/dev/null
mkdir -p "$WORK/devices"
echo "demo passphrase, not for real use" > "$WORK/devices/pass"
# party NAME ARGS...: cosignerctl party with NAME's certificate and file.
party() { local who=$1; shift; "$BIN/cosignerctl" --certs "$CERTS" --as "$who" party --file "$WORK/devices/$who.party" --passphrase-file "$WORK/devices/pass" "$@"; }
# make_policy: the development bundle (deploy/policies/development) with D1 and D2 as
# operators, in $WORK/policy. Call after D1 and D2 are set.
make_policy() {
  mkdir -p "$WORK/policy"
  cp deploy/policies/development/*.rego "$WORK/policy/"
  sed "s/\"operators\": {}/\"operators\": {\"$D1\": true, \"$D2\": true}/" \
    deploy/policies/development/data.json > "$WORK/policy/data.json"
}
# start_daemon NAME PORT TPM_PORT [EXTRA_TOML]: a swtpm and a cosignerd that lets D1 and D2
# (the device parties' ids) request keygen, with the development policy; waits until it serves.
start_daemon() { # name port tpm-port
  local name=$1 port=$2 dir="$WORK/$1" tpm=$3
  mkdir -p "$dir/tpm"
  swtpm socket --tpm2 --tpmstate dir="$dir/tpm" \
    --server type=tcp,port=$tpm,bindaddr=127.0.0.1 \
    --ctrl type=tcp,port=$((tpm + 1)),bindaddr=127.0.0.1 \
    --flags not-need-init,startup-clear &
  PIDS+=($!)
  cat > "$dir/cosignerd.toml" <<TOML
[server]
listen = "127.0.0.1:$port"

[tls]
ca = "$CERTS/ca.pem"
cert = "$CERTS/cosignerd.pem"
key = "$CERTS/cosignerd.key"

[data]
dir = "data"

[seal]
backend = "tpm"
tcti = "swtpm:host=127.0.0.1,port=$tpm"

[ceremonies]
# Parties that may request a keygen (sign and reshare need committee membership).
allowed_requesters = ["$D1", "$D2"]

[policy]
bundle = "$WORK/policy"
${4:-}
TOML
  sleep 0.3
  "$BIN/cosignerd" --config "$dir/cosignerd.toml" 2>"$dir/cosignerd.log" &
  PIDS+=($!)
  for _ in $(seq 100); do
    "$BIN/cosignerctl" --addr "https://127.0.0.1:$port" --certs "$CERTS" health >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$dir/cosignerd.log"; exit 1
}
# admin ADDR ARGS...: cosignerctl as the admin.
admin() { local addr=$1; shift; "$BIN/cosignerctl" --addr "$addr" --certs "$CERTS" "$@"; }
# spec NAME ADDR: NAME:PARTY_ID:ENCRYPTION_KEY of a daemon, from its status.
spec() { # name addr -> NAME:ID:KEY
  local s; s=$(admin "$2" status --json)
  echo "$1:$(echo "$s" | jget party_id):$(echo "$s" | jget encryption_key)"
}
