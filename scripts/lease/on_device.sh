#!/usr/bin/env bash
# Train, export and evaluate the default spsr-x4 weights on a lent GPU machine, one step per
# device call (each call <= 10 min; the machine keeps /tmp while it stays warm, so keep calls
# back to back). Run from the repository root on the device; prepare with scripts/lease/pack.py.
#
#   scripts/lease/on_device.sh stage1          # carry .lease/part1: photographs, benchmarks, LPIPS
#   scripts/lease/on_device.sh stage2          # carry .lease/part2: Real-ESRGAN init, VGG16
#   scripts/lease/on_device.sh train MINUTES   # warm-up (WARMUP_MIN) then GAN; run again to continue
#   scripts/lease/on_device.sh finish          # export EMA float16, eval Set5/Set14, files to $OUT
#
# Knobs: LEASE (work dir, /tmp/spsr-lease), WARMUP_MIN (psnr warm-up minutes, 4), BATCH (32),
# DEVICE (cuda; "cpu" for a dry run), SETS (benchmarks for finish, "Set5 Set14"),
# EXTRA (more --set options, e.g. for a CPU dry run).
# Then, here: python scripts/lease/ship.py --parts FILES_AT
set -euo pipefail
LEASE=${LEASE:-/tmp/spsr-lease}
WARMUP_MIN=${WARMUP_MIN:-4}
BATCH=${BATCH:-32}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-$LEASE/out}
EXTRA=${EXTRA:-}
export SPSR_HOME=$LEASE/home PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
CONFIG=configs/spsr-x4-lease.yaml
DATA="--set data.hr_dirs=[$LEASE/data/train/bsds500,$LEASE/data/train/t91]"
spsr() { python3 -m spsr_cli "$@"; }
now() { date +%s; }

case "${1:-}" in
stage1)
  mkdir -p "$LEASE/data" "$SPSR_HOME/aux"
  tar -xf .lease/part1/data.tar -C "$LEASE/data"
  cp .lease/part1/lpips-alex-v0.1.safetensors "$SPSR_HOME/aux/"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  python3 -c "import torch, typer, rich, yaml, safetensors, huggingface_hub; print('torch', torch.__version__, torch.cuda.is_available())"
  du -sh "$LEASE"/data/* ;;
stage2)
  mkdir -p "$LEASE/init" "$SPSR_HOME/aux"
  cp .lease/part2/realesrgan-x4plus-rrdb.safetensors "$LEASE/init/"
  cp .lease/part2/vgg16-*.safetensors "$SPSR_HOME/aux/"
  ls -la "$LEASE/init" "$SPSR_HOME/aux" ;;
train)
  budget=${2:?train needs the minutes this call may use}
  start=$(now)
  common=(--config "$CONFIG" $DATA --set "data.batch_size=$BATCH" --set "train.device=$DEVICE" $EXTRA)
  if [ ! -f "$LEASE/runs/warmup.done" ]; then
    spsr train "${common[@]}" --out "$LEASE/runs/warmup" --stage psnr \
      --init "$LEASE/init/realesrgan-x4plus-rrdb.safetensors" --set train.lr=2e-4 \
      --set "train.time_limit_min=$WARMUP_MIN"
    touch "$LEASE/runs/warmup.done"
  fi
  left=$(python3 -c "print(max(0.5, $budget - ($(now) - $start) / 60 - 0.5))")
  if [ -d "$LEASE/runs/gan" ]; then
    spsr train "${common[@]}" --out "$LEASE/runs/gan" --stage gan --resume --set "train.time_limit_min=$left"
  else
    spsr train "${common[@]}" --out "$LEASE/runs/gan" --stage gan --init "$LEASE/runs/warmup" \
      --set "train.time_limit_min=$left"
  fi
  tail -n 3 "$LEASE/runs/gan/log.jsonl" ;;
finish)
  mkdir -p "$OUT" "$LEASE/results"
  spsr train export "$LEASE/runs/gan" --name spsr-x4 --licence BSD-3-Clause --force \
    --description "SPSR x4, one GPU lease: Real-ESRGAN x4plus init, psnr warm-up, SPSR-G GAN stage"
  weights="$SPSR_HOME/weights/spsr-x4.safetensors"
  sha256sum "$weights" | tee "$LEASE/results/sha256.txt"
  for set in ${SETS:-Set5 Set14}; do
    for model in spsr-x4 bicubic; do
      spsr eval --hr-dir "$LEASE/data/bench/$set/HR" --lr-dir "$LEASE/data/bench/$set/LR_bicubic_X4" \
        --model "$model" --protocol spsr-paper --device "$DEVICE" --json "$LEASE/results/$set-$model.json" \
        $( [ "$model" = spsr-x4 ] && echo --save-images "$LEASE/results/sr-$set" )
    done
  done
  cp "$LEASE/runs/warmup/log.jsonl" "$LEASE/results/warmup-log.jsonl"
  cp "$LEASE/runs/gan/log.jsonl" "$LEASE/results/gan-log.jsonl"
  cp "$LEASE/runs/gan/config.yaml" "$LEASE/results/gan-config.yaml"
  tar -cf "$OUT/results.tar" -C "$LEASE" results
  split -b 15M -d "$weights" "$OUT/spsr-x4.safetensors.part"
  ls -la "$OUT" ;;
*)
  sed -n '2,14p' "$0"; exit 2 ;;
esac
