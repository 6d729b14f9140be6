#!/usr/bin/env bash
# Installs the Debian packages moe builds and tests with (root or sudo). Idempotent and quick when
# everything is present. The CUDA toolkit is optional and not installed here.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config liburing-dev libmimalloc-dev libfmt-dev libcli11-dev
      doctest-dev python3 python3-numpy python3-jinja2 clang)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
