#!/usr/bin/env bash
# The main job, run locally: two cosignerd daemons (each with its own software TPM and
# embedded relay, deciding with the development policy bundle) and two device parties
# (cosignerctl party). Device-1 generates a 2-of-3 vault with the two daemons, signs with
# each pair (each signature checked by OpenSSL, an implementation independent of ours),
# signs an Ethereum transaction, shows a daily limit denying the next one after a policy
# reload, reshares the vault to 3-of-4 adding device-2 (same public key), signs with the
# new committee, shows that its old share is refused, and prints both daemons' histories.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

source scripts/cluster.sh
say "development certificates in $CERTS"

say "two device parties, keys in passphrase-encrypted files (Argon2id + ChaCha20-Poly1305)"
party device-1 init --name device-1
party device-2 init --name device-2
D1=$(party device-1 show --json | jget party_id)
D2=$(party device-2 show --json | jget party_id)
make_policy
D2_SPEC="device-2:$D2:$(party device-2 show --json | jget encryption_key)"

say "server-a and server-b: cosignerd, each with its own swtpm"
start_daemon server-a "$PORT" "$((PORT + 100))"
start_daemon server-b "$((PORT + 1))" "$((PORT + 110))"
A="https://127.0.0.1:$PORT"; B="https://127.0.0.1:$((PORT + 1))"
SA=$(spec server-a "$A"); SB=$(spec server-b "$B")
DAEMONS=(--daemon "server-a=$A" --daemon "server-b=$B")

say "keygen 2-of-3: device-1, server-a, server-b (relay: server-a's embedded relay)"
party device-1 keygen --vault demo --threshold 2 --member "$SA" --member "$SB" "${DAEMONS[@]}"
admin "$A" vault show demo

verify() { # json output of party sign -> OpenSSL check
  local out=$1
  local pub hash der
  pub=$(echo "$out" | jget public_key)
  hash=$(echo "$out" | jget hash)
  der=$(echo "$out" | jget der)
  perl -e 'print pack("H*", shift)' "3036301006072a8648ce3d020106052b8104000a032200$pub" > "$WORK/pub.der"
  openssl pkey -pubin -inform DER -in "$WORK/pub.der" -out "$WORK/pub.pem" 2>/dev/null
  perl -e 'print pack("H*", shift)' "$hash" > "$WORK/hash.bin"
  perl -e 'print pack("H*", shift)' "$der" > "$WORK/sig.der"
  openssl pkeyutl -verify -pubin -inkey "$WORK/pub.pem" -in "$WORK/hash.bin" -sigfile "$WORK/sig.der"
}
for pair in "server-a server-b" "device-1 server-a" "device-1 server-b"; do
  set -- $pair
  say "sign with $1 + $2 (EIP-191 message), checked by OpenSSL"
  out=$(party device-1 sign --vault demo --message "pay 1 ETH ($1+$2)" --signer "$1" --signer "$2" "${DAEMONS[@]}" --json)
  echo "$out"
  verify "$out"
done

say "an Ethereum transaction (EIP-155's example: 1 ETH on chain 1): decoded and hashed by the daemons, checked by OpenSSL"
TX=ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080
out=$(party device-1 sign --vault demo --eth-tx "$TX" --signer server-a --signer server-b "${DAEMONS[@]}" --json)
echo "$out"
verify "$out"

say "the policy: a daily limit of 1 ETH, reloaded without a restart; the same transaction is now denied"
sed -i 's/"operators": {/"daily_limit": {"ethereum:1:native": "1000000000000000000"}, "operators": {/' "$WORK/policy/data.json"
admin "$A" policy reload
admin "$B" policy reload
party device-1 sign --vault demo --eth-tx "$TX" --signer server-a --signer server-b "${DAEMONS[@]}" \
  && { echo "the policy did not deny!"; exit 1; } || true
admin "$A" history list --kind sign --limit 2

cp "$WORK/devices/device-1.party" "$WORK/devices/device-1.epoch0.party"
say "reshare 2-of-3 -> 3-of-4 adding device-2 (dealers: device-1, server-a); device-2 joins"
party device-1 reshare --vault demo --threshold 3 --dealer device-1 --dealer server-a \
  --add "$D2_SPEC" \
  "${DAEMONS[@]}" --request-out "$WORK/devices/reshare.json" &
COORD=$!
for _ in $(seq 200); do [ -s "$WORK/devices/reshare.json" ] && break; sleep 0.05; done
party device-2 join --request "$WORK/devices/reshare.json"
wait $COORD
admin "$B" vault show demo

say "sign with the new committee (device-2, server-a, server-b): same public key"
out=$(party device-2 sign --vault demo --message "after the reshare" --signer device-2 --signer server-a --signer server-b "${DAEMONS[@]}" --json)
echo "$out"
verify "$out"

say "device-1's share of epoch 0 (a copy of its old file) is refused"
"$BIN/cosignerctl" --certs "$CERTS" --as device-1 party --file "$WORK/devices/device-1.epoch0.party" \
  --passphrase-file "$WORK/devices/pass" sign --vault demo --message "old share" \
  --signer device-1 --signer server-a "${DAEMONS[@]}" && { echo "old share was accepted!"; exit 1; } || true

say "history of server-a (every request and ceremony, hash-chained)"
admin "$A" history list
admin "$A" history verify
say "history of server-b"
admin "$B" history list --limit 5

say "stopping"
cleanup
trap - EXIT
echo "demo complete; files in $WORK"
