#!/usr/bin/env bash
# One training stage of the bundled model on a GPU machine, then its held-out evaluation.
#
#   scripts/train_stage.sh OUT_DIR TRAIN_ARGS...
#
# Trains with `python -m da3_ros.training.train --out /tmp/stage TRAIN_ARGS...`, copies the
# exported weights (model/config.json with the bundled model's `da3_ros` block, fp16
# model.safetensors) and train_log.json to OUT_DIR, then scores the new weights on the held-out
# scenes (da3_ros.training.evaluate, CPU) six ways, in parallel, into OUT_DIR/eval_*.json:
# 6-view windows and one view at a time, on clean frames, with a robot camera's degradations and
# on the scan camera path.
set -euo pipefail
out=$1; shift
mkdir -p "$out/model"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
python3 -m da3_ros.training.train --out /tmp/stage "$@" 2>&1 | grep -E '"step": [0-9]*00,|done|resumed|Error|error' || true
cp /tmp/stage/train_log.json "$out/"
cp /tmp/stage/model/model.safetensors "$out/model/"
cp data/models/da3-tiny-synth/config.json "$out/model/"
if ! python3 -c "import evo" 2>/dev/null; then
  echo "evo is not installed here: evaluate $out/model elsewhere (docs/TRAINING.md)"; exit 0
fi
ev() { python3 -m da3_ros.training.evaluate --model "$out/model" --num-view 6 --stride 3 "${@:2}" \
         --json "$out/eval_$1.json" > "$out/eval_$1.log" 2>&1; }
ev clean & ev clean_1view --per-view & ev robot --camera-effects robot &
ev robot_1view --camera-effects robot --per-view &
ev scan --trajectory scan & ev scan_1view --trajectory scan --per-view & wait
for f in "$out"/eval_*.log; do
  [ -f "${f%.log}.json" ] || { echo "FAILED: $f"; tail -n 15 "$f"; }
done
for f in "$out"/eval_*.json; do
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[1].split('/')[-1], {k: round(v, 4) for k, v in r['mean'].items()})" "$f"
done
rm -f "$out"/eval_*.log
