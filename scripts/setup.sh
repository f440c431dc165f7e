#!/usr/bin/env bash
# Installs what building and testing cosigner needs on Debian/Ubuntu, only where missing.
# Sourced by scripts/test.sh and scripts/demo.sh; safe to run again.
set -euo pipefail

PACKAGES=(libtss2-dev pkg-config swtpm swtpm-tools tpm2-tools build-essential ca-certificates openssl perl curl systemd)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  for d in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
    [ -x "$d/cargo" ] && export PATH="$d:$PATH" && break
  done
fi
command -v cargo >/dev/null || {
  echo "setup: no Rust toolchain: install it with rustup (https://rustup.rs), Rust 1.89 or newer" >&2
  exit 1
}
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy >/dev/null 2>&1 || true
