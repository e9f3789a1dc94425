#!/usr/bin/env bash
# Issue 7's GPU figures in one go, on a lent GPU machine (see bench/RESULTS.md):
#   1. a 512-frame 720x1280 synthetic clip (+ a 4-frame warm-up clip);
#   2. a torchvision Mask R-CNN R50-FPN trained briefly by `segflow train` on that clip
#      (no weights can be downloaded: a from-scratch model that detects the shapes with
#      realistic scores, so the post-processing stages get realistic work; on an H200,
#      0.30 s/step at batch 4, loss 2.2 -> 0.21 in 450 steps);
#   3. bench/pipeline_vs_model.py, bench/timeline.py (where the flow's time goes),
#      bench/pipeline_vs_naive.py with --device cuda, then the timeline again with the
#      model kept in the flow's process (SEGFLOW_MODEL_PROCESS=0: the A/B of models/worker.py).
#
#   OUT=/tmp/gpu bash bench/gpu_check.sh                  # on the GPU machine
#   SMOKE=1 OUT=/tmp/gpu bash bench/gpu_check.sh          # the same steps, tiny, on the CPU
#
# The device machines have torch/torchvision/OpenCV but not Prefect, decord, shapely,
# pycocotools or imageio-ffmpeg and no network: wheels for the missing packages travel in
# .whl/ (see RESULTS.md for how they were fetched) and bench/shims stands in for
# imageio-ffmpeg (OpenCV's mp4v encoder writes the synthetic clips there).
set -uo pipefail
OUT=${OUT:-/tmp/segflow-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PREFECT_SERVER_ANALYTICS_ENABLED=false SEGFLOW_OFFLINE=1
W=${WORK:-/tmp/segflow-gpu-work}
mkdir -p "$W"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/steps.log"; }

if [ "${SMOKE:-0}" = 1 ]; then
  DEVICE=cpu SIZE=240x320 FRAMES=16 TRAIN_FRAMES=8 STEPS=2 REPS=1 PY=${PY:-python} ARCH=maskrcnn_small
else
  ARCH=maskrcnn_r50_fpn DEVICE=cuda SIZE=720x1280 FRAMES=${FRAMES:-512} STEPS=${STEPS:-350} REPS=${REPS:-2} PY=python3
  log "machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/steps.log"
  log "install"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl 2>&1 | tail -3
  $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -3
  $PY -c "import imageio_ffmpeg" 2>/dev/null || export PYTHONPATH="$PWD/bench/shims${PYTHONPATH:+:$PYTHONPATH}"
  $PY -c "import torch, torchvision, prefect, decord, segflow.flows.label; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'prefect', prefect.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$OUT/steps.log" || exit 1
fi
H=${SIZE%x*}; WD=${SIZE#*x}
# Trained on the bench clip itself by default (as in stop 11): a model trained on another
# clip (seed 5, 128 frames) gave 50 low-score detections a frame on this one (stop 12).
TRAIN_SEED=${TRAIN_SEED:-3} TRAIN_FRAMES=${TRAIN_FRAMES:-$FRAMES}

log "clips ($TRAIN_FRAMES frames to train on, then $FRAMES frames $SIZE to bench, made while the model trains)"
clips() {  # frames seed...: synthetic clips of that length
  $PY - "$W" "$H" "$WD" "$@" <<'EOF' 2>&1 | tee -a "$OUT/steps.log"
import sys, time
sys.path.insert(0, "bench")  # its helpers, as python bench/x.py has them
from pathlib import Path
from common import make_clip
work, h, w, frames, seeds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
t = time.perf_counter()
print(*(make_clip(work / "clips", int(s), frames, (h, w)) for s in seeds), f"{time.perf_counter() - t:.1f} s")
EOF
}
clips "$TRAIN_FRAMES" "$TRAIN_SEED"
BENCH_CLIPS=
if [ "$TRAIN_SEED/$TRAIN_FRAMES" != "3/$FRAMES" ]; then clips "$FRAMES" 3 > /dev/null & BENCH_CLIPS=$!; fi
clips 4 103 > /dev/null
CLIP_JSON="$W/clips/bench_s${TRAIN_SEED}_${TRAIN_FRAMES}f_${H}x${WD}.coco.json"

log "train R50-FPN ($STEPS steps)"
MODEL="$W/r50.safetensors"
# Output to a file, not a pipe: a timed-out run's temporary Prefect server would hold
# the pipe open (and this script) for minutes.
timeout -k 10 "${TRAIN_TIMEOUT:-200}" $PY -m segflow.cli train --data "$CLIP_JSON" --out "$MODEL" --arch "$ARCH" \
  --steps "$STEPS" --batch-size 4 --lr "${LR:-5e-4}" --device "$DEVICE" --checkpoint-every 50 > "$W/train.log" 2>&1 < /dev/null
grep -E "step|wall|Error|error" "$W/train.log" | tail -12 | tee -a "$OUT/steps.log"
if [ ! -f "$MODEL" ]; then  # stopped by the timeout: the latest periodic checkpoint
  LAST=$(ls "$W"/r50.step*.safetensors 2>/dev/null | sort | tail -1)
  [ -n "$LAST" ] && cp "$LAST" "$MODEL" && log "using $LAST"
fi
[ -f "$MODEL" ] || { log "no model"; exit 1; }
[ -n "$BENCH_CLIPS" ] && wait $BENCH_CLIPS

log "pipeline_vs_model"
timeout 200 $PY bench/pipeline_vs_model.py --device "$DEVICE" --size "$SIZE" --frames "$FRAMES" --reps "$REPS" \
  --model "$MODEL" --workdir "$W" 2>&1 | grep -v "INFO\|^  rep" | tee "$OUT/pipeline_vs_model.txt"
grep -q '^{' "$OUT/pipeline_vs_model.txt" || {  # no result: the model process failed? the same in-process
  log "pipeline_vs_model, SEGFLOW_MODEL_PROCESS=0"
  SEGFLOW_MODEL_PROCESS=0 timeout 200 $PY bench/pipeline_vs_model.py --device "$DEVICE" --size "$SIZE" --frames "$FRAMES" \
    --reps "$REPS" --model "$MODEL" --workdir "$W" 2>&1 | grep -v "INFO\|^  rep" | tee "$OUT/pipeline_vs_model_in_process.txt"
}
log "pipeline_vs_naive"
timeout 200 $PY bench/pipeline_vs_naive.py --device "$DEVICE" --size "$SIZE" --frames "$FRAMES" --reps "$REPS" \
  --model "$MODEL" --workdir "$W" 2>&1 | grep -v "INFO\|^  rep" | tee "$OUT/pipeline_vs_naive.txt"
[ "${TIMELINES:-1}" = 1 ] || { log "done"; exit 0; }
log "timeline (model process)"
timeout 90 $PY bench/timeline.py --device "$DEVICE" --size "$SIZE" --frames "$FRAMES" \
  --model "$MODEL" --workdir "$W" 2>&1 | grep -v "INFO" | tee "$OUT/timeline.txt"
log "timeline (model in the flow's process)"
SEGFLOW_MODEL_PROCESS=0 timeout 90 $PY bench/timeline.py --device "$DEVICE" --size "$SIZE" --frames "$FRAMES" \
  --model "$MODEL" --workdir "$W" 2>&1 | grep -v "INFO" | tee "$OUT/timeline_in_process.txt"
log "done"
