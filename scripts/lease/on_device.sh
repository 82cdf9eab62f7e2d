#!/usr/bin/env bash
# Continue training the shipped spsr-x4 on a lent GPU machine, one step per device call; run from the
# repository root on the device, after scripts/lease/pack.py here. The machine is given back 30 s after a
# call ends and takes /tmp with it, so keep the calls back to back; training runs detached (setsid) and
# every call brings the latest EMA generator back in $OUT, so nothing is lost if the machine goes.
#
#   scripts/lease/on_device.sh receive           # once per chunk: carry .lease/chunkNNofMM
#   scripts/lease/on_device.sh train MINUTES     # start (or keep) training; wait MINUTES; export to $OUT
#   scripts/lease/on_device.sh finish            # stop, export EMA float16 parts + Set5/Set14 JSONs to $OUT
#
# Knobs: LEASE (work dir, /tmp/spsr-lease), BATCH (32), DEVICE (cuda; "cpu" for a dry run),
# EXTRA (more --set options). Then, here:
#   python scripts/lease/ship.py --parts FILES_AT     (joins, verifies, scores, ships only if better)
set -euo pipefail
LEASE=${LEASE:-/tmp/spsr-lease}
BATCH=${BATCH:-32}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-$LEASE/out}
EXTRA=${EXTRA:-}
RUN=$LEASE/runs/gan
export SPSR_HOME=$LEASE/home PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
spsr() { python3 -m spsr_cli "$@"; }

export_ema() {  # the newest checkpoint's EMA generator, float16, in parts of <= 15 MiB, with its sha256
  mkdir -p "$OUT"
  python3 - "$RUN" "$OUT" <<'PY'
import hashlib, sys
from pathlib import Path
from spsr_cli.train.checkpoint import latest_checkpoint, load_checkpoint
from spsr_cli.train.config import TrainConfig
from spsr_cli.weights.store import write_generator_file
run, out = Path(sys.argv[1]), Path(sys.argv[2])
ckpt = latest_checkpoint(run)
if ckpt is None:
    sys.exit("no checkpoint yet")
state = load_checkpoint(ckpt)
target = run / "candidate.safetensors"
sha = write_generator_file(target, state["ema"], TrainConfig.from_dict(state["config"]).spsr_config(),
                           source=f"GPU lease step {state['step']} (EMA)", licence="Apache-2.0",
                           extra_metadata={"training_step": str(state["step"])})
data = target.read_bytes()
for i in range(0, len(data), 15 << 20):
    (out / f"spsr-x4.safetensors.part{i // (15 << 20):02d}").write_bytes(data[i:i + (15 << 20)])
(out / "sha256.txt").write_text(f"{sha}  step {state['step']}\n")
print("exported step", state["step"], sha)
PY
  cp "$RUN/log.jsonl" "$OUT/log.jsonl"
}

case "${1:-}" in
receive)
  mkdir -p "$LEASE/chunks"
  for chunk in .lease/chunk*; do cp "$chunk/payload.part" "$LEASE/chunks/$(basename "$chunk")"; done
  have=$(ls "$LEASE/chunks" | wc -l); want=$(ls "$LEASE/chunks" | head -n1 | sed 's/.*of0*//')
  echo "received $have of $want chunks"
  if [ "$have" = "$want" ]; then
    cat "$LEASE"/chunks/chunk* | tar -x -C "$LEASE" && rm -rf "$LEASE/chunks"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    du -sh "$LEASE"/data/* "$LEASE"/home/aux
  fi ;;
train)
  minutes=${2:?train needs the minutes this call may wait}
  if ! pgrep -f "spsr_cli train .*$RUN" >/dev/null; then
    resume=(); [ -d "$RUN/checkpoints" ] && resume=(--resume)
    init=(); [ ${#resume[@]} -eq 0 ] && init=(--init spsr_cli/weights/bundled/spsr-x4.safetensors)
    setsid python3 -m spsr_cli train --config configs/spsr-x4-lease.yaml --out "$RUN" "${resume[@]}" "${init[@]}" \
      --set "data.hr_dirs=[$LEASE/data/train/bsds500,$LEASE/data/train/t91]" --set "data.batch_size=$BATCH" \
      --set "train.device=$DEVICE" $EXTRA >>"$LEASE/train.out" 2>&1 < /dev/null &
  fi
  sleep "$(python3 -c "print(int(60 * $minutes))")"
  tail -n 2 "$LEASE/train.out"
  export_ema ;;
finish)
  pkill -INT -f "spsr_cli train .*$RUN" || true
  while pgrep -f "spsr_cli train .*$RUN" >/dev/null; do sleep 2; done
  export_ema
  for set in Set5 Set14; do
    spsr eval --hr-dir "$LEASE/data/bench/$set/HR" --lr-dir "$LEASE/data/bench/$set/LR_bicubic_X4" \
      --model "$RUN/candidate.safetensors" --protocol spsr-paper --device "$DEVICE" --precision fp32 --no-niqe --json "$OUT/$set.json"
  done
  ls -la "$OUT" ;;
*)
  sed -n '2,15p' "$0"; exit 2 ;;
esac
