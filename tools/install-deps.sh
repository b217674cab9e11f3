#!/usr/bin/env bash
# Installs what kmsd needs to build, run and test on Debian 12, skipping what is there.
# Usage: tools/install-deps.sh [--test]   (--test adds what only the test suite needs)
set -euo pipefail

packages=(
  build-essential cmake pkg-config ccache mold
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libssl-dev openssl libpq-dev libhiredis-dev libsqlite3-dev
  libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev libboost-dev
  softhsm2 libsofthsm2-dev opensc p11-kit libp11-kit-dev
)
if [[ "${1:-}" == "--test" ]]; then
  packages+=(libgtest-dev libgmock-dev libbenchmark-dev postgresql-15 redis-server clang
             prometheus python3-grpcio python3-protobuf python3-botocore python3-hvac curl
             yamllint python3-cryptography python3-crc32c time)
  # The image may already carry a newer Node.js with npm; Debian's nodejs conflicts with it.
  command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "installing: ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
