#!/usr/bin/env bash
# Provisions the configuration of a set of co-signer daemons from the certificates that
# `cosignerctl certs init --daemon NAME ...` wrote (or your own CA's, named the same way).
#
#   deploy/provision.sh --certs DIR --out DIR [--policy DIR] [--data-dir PATH]
#       [--requester PARTY_ID]... [--trust-domain NAME]
#       --daemon NAME [--listen ADDR] [--metrics ADDR|off] [--tcti TCTI]
#       [--daemon NAME ...]
#
# For each daemon it writes OUT/NAME/ laid out like /etc/cosigner on that host:
#   cosignerd.toml   every path in it relative to this folder (see deploy/cosignerd.example.toml
#                    for what each key means)
#   tls/ca.pem       the CA every client certificate must chain to
#   tls/cosignerd.pem, tls/cosignerd.key   NAME's certificate and key (from DIR/NAME.pem, .key)
#   policy/          a copy of the policy bundle (default: deploy/policies/treasury)
# The CA's private key is never copied. Keys are written 0600 in 0700 folders; on the host,
# install the folder as /etc/cosigner (root:cosigner, 0750; the key 0640) — see the README.
# Options after --daemon apply to that daemon: --listen (default 0.0.0.0:7443), --metrics
# (default 127.0.0.1:9464; "off" for none), --tcti (default device:/dev/tpmrm0).
# --requester (repeatable) lists the party ids that may request a keygen, on every daemon.
# When cosignerd is on PATH (or $COSIGNERD names it), each config is checked with
# `cosignerd --check-config` before the script reports success.
set -euo pipefail

die() { echo "provision: $*" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"

certs="" out="" policy="$here/policies/treasury" data_dir="/var/lib/cosigner" trust_domain="cosigner"
requesters=()
names=() listens=() metrics=() tctis=()
while (($#)); do
  opt=$1
  [ $# -ge 2 ] || die "$opt needs a value"
  val=$2
  shift 2
  case "$opt" in
    --certs) certs=$val ;;
    --out) out=$val ;;
    --policy) policy=$val ;;
    --data-dir) data_dir=$val ;;
    --trust-domain) trust_domain=$val ;;
    --requester)
      [[ $val =~ ^[0-9a-f]{64}$ ]] || die "--requester $val: a party id is 64 lowercase hex characters (cosignerctl party show)"
      requesters+=("$val") ;;
    --daemon)
      [[ $val =~ ^[A-Za-z0-9._-]{1,64}$ ]] || die "--daemon $val: a name is 1-64 of [A-Za-z0-9._-]"
      for n in "${names[@]}"; do [ "$n" != "$val" ] || die "--daemon $val is given twice"; done
      names+=("$val"); listens+=("0.0.0.0:7443"); metrics+=("127.0.0.1:9464"); tctis+=("device:/dev/tpmrm0") ;;
    --listen|--metrics|--tcti)
      ((${#names[@]})) || die "$opt comes after the --daemon it applies to"
      i=$((${#names[@]} - 1))
      case "$opt" in
        --listen) listens[i]=$val ;;
        --metrics) metrics[i]=$val ;;
        --tcti) tctis[i]=$val ;;
      esac ;;
    *) die "unknown option $opt (see the top of $0)" ;;
  esac
done
[ -n "$certs" ] || die "--certs DIR is required (the output of cosignerctl certs init)"
[ -n "$out" ] || die "--out DIR is required"
((${#names[@]})) || die "at least one --daemon NAME is required"
[ -f "$certs/ca.pem" ] || die "$certs/ca.pem is missing: run cosignerctl certs init --dir $certs --daemon NAME ..."
[ -d "$policy" ] || die "--policy $policy is not a folder"
ls "$policy"/*.rego >/dev/null 2>&1 || die "--policy $policy holds no .rego file"

toml_list() { # "a" "b" -> ["a", "b"]
  local s="" x
  for x in "$@"; do s+="${s:+, }\"$x\""; done
  printf '[%s]' "$s"
}

# Everything is checked before anything is written; the folders are written to a staging
# folder beside OUT and moved into place only when every config passed, so a refusal leaves
# nothing behind.
for name in "${names[@]}"; do
  for f in "$certs/$name.pem" "$certs/$name.key"; do
    [ -f "$f" ] || die "$f is missing: issue it with cosignerctl certs init --dir $certs --daemon $name (or your CA, URI SAN spiffe://$trust_domain/party/$name)"
  done
  [ ! -e "$out/$name" ] || die "$out/$name exists; remove it first (nothing was written)"
done

umask 077
stage=$(mktemp -d "${out%/}.provision-XXXXXX")
trap 'rm -rf "$stage"' EXIT
for i in "${!names[@]}"; do
  name=${names[i]}
  dir="$stage/$name"
  mkdir -p "$dir/tls" "$dir/policy"
  cp "$certs/ca.pem" "$dir/tls/ca.pem"
  cp "$certs/$name.pem" "$dir/tls/cosignerd.pem"
  cp "$certs/$name.key" "$dir/tls/cosignerd.key"
  cp "$policy"/*.rego "$dir/policy/"
  if ls "$policy"/*.json >/dev/null 2>&1; then cp "$policy"/*.json "$dir/policy/"; fi
  if [ "${metrics[i]}" = off ]; then metrics_line='listen = ""'; else metrics_line="listen = \"${metrics[i]}\""; fi
  cat > "$dir/cosignerd.toml" <<TOML
# cosignerd configuration for $name, written by deploy/provision.sh.
# Every key is explained in deploy/cosignerd.example.toml. Paths are relative to this file.

[server]
listen = "${listens[i]}"
shutdown_grace_secs = 3

[tls]
ca = "tls/ca.pem"
cert = "tls/cosignerd.pem"
key = "tls/cosignerd.key"
trust_domain = "$trust_domain"
client_auth = "required"

[data]
dir = "$data_dir"

[seal]
backend = "tpm"
tcti = "${tctis[i]}"
pcrs = []

[history]
retention_days = 0

[log]
format = "human"
level = "info"

[relay]
enabled = true

[ceremonies]
# Party ids that may request a keygen; sign and reshare requesters must be in the vault.
allowed_requesters = $(toml_list "${requesters[@]}")

[policy]
bundle = "policy"
watch_secs = 2

[metrics]
# Prometheus text format at http://ADDR/metrics, plain HTTP: keep it on a monitoring network.
$metrics_line
TOML
done

cosignerd_bin=${COSIGNERD:-$(command -v cosignerd || true)}
if [ -n "$cosignerd_bin" ]; then
  for name in "${names[@]}"; do
    "$cosignerd_bin" --check-config "$stage/$name/cosignerd.toml" >/dev/null \
      || die "the config of $name does not pass cosignerd --check-config (above); nothing was written"
  done
  checked="every config passes cosignerd --check-config"
else
  checked="cosignerd not found (set COSIGNERD=PATH): the configs were not checked"
fi
mkdir -p "$out"
for i in "${!names[@]}"; do
  mv "$stage/${names[i]}" "$out/${names[i]}"
  echo "provision: $out/${names[i]} (listen ${listens[i]}, metrics ${metrics[i]}, tcti ${tctis[i]})"
done
echo "provision: $checked"
