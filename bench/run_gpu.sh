#!/usr/bin/env bash
# One device call of da3-bench: every measurement of a phase in one command, each step with a
# time guard so the whole call ends inside the device's per-call limit (~560 s).
#   bash bench/run_gpu.sh PHASE [OUTDIR]
# PHASE: baseline (call 1: current code vs upstream + lever sweep), full (call 2: grid to S=512,
# 16 GiB fit, node path), final (call 3: checks, node path, 16 GiB fit); dry, dryfull and dryfinal
# run baseline, full and final with tiny CPU settings to check the script before a device call.
# On the GPU machine the upstream wheels come from .whl (carried); our package from the repo.
set -u -o pipefail
PHASE=${1:-baseline}
OUT=${2:-${OUT:-/tmp/bench_out}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
T0=$SECONDS
left() { echo $(( ${BUDGET:-540} - (SECONDS - T0) )); }
step() {  # step NAME MAXSEC ARGS... : run da3-bench with --max-seconds, killed a bit later
  local name=$1 max=$2; shift 2
  local l; l=$(left)
  if (( l < 20 )); then echo "## skip $name: $l s left"; return; fi
  (( max > l - 10 )) && max=$(( l - 10 ))
  echo "## $name (max $max s, $(left) s left) : da3-bench $*"
  timeout $(( max + 60 < l ? max + 60 : l )) $PY -m bench.network "$@" --max-seconds "$max" \
    --json "$OUT/$name.json" 2>&1 | grep -v "Selecting reference view\|using MLP layer" | tee -a "$OUT/log.txt"
}
if [[ $PHASE == dry ]]; then
  L=da3-small; S=da3-small; RES=112x84; G="1,2,4"; GL="1,2"; LV="1,2"; X="--iters 1 --warmup 1"
  LEVERS="base,graph"; BIG=4; BUDGET=${BUDGET:-900}
else
  L=da3-large; S=da3-small; RES=504x378; X=""
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total,power.limit \
    --format=csv | tee "$OUT/gpu.txt"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn',
torch.backends.cudnn.version())" | tee -a "$OUT/gpu.txt"
fi
case $PHASE in
  baseline|dry)
    G=${G:-1,2,4,8,16,32,128}; GL=${GL:-1,8}; LV=${LV:-1,8}; BIG=${BIG:-512}
    LEVERS=${LEVERS:-fp32,autocast,bf16_sdpa,bf16_flash,base,head_bf16,channels_last,graph,head_bf16_graph,compile_graph,compile}
    step large_grid 190 --preset $L --res $RES --views "$G" --checks --backends $X
    step small_grid 45 --preset $S --res $RES --views "$GL" $X
    step large_big 90 --preset $L --res $RES --views $BIG --no-upstream --no-flops --iters 1 $X
    step large_levers 400 --preset $L --res $RES --views "" --no-upstream --levers "$LEVERS" \
      --lever-views "$LV" $X
    ;;
  full|dryfull)
    if [[ $PHASE == dryfull ]]; then
      L=da3-small; RES=112x84; X="--iters 1 --warmup 1"; BIG=40; C=regions-dynamic; BUDGET=${BUDGET:-1200}
    else BIG=512; C=default; fi
    # latency (S=1, 8): whole-network static torch.compile + CUDA graph; checks; node path
    step large_latency 170 --preset $L --res $RES --views 1,8 --compile $C --graphs --checks \
      --node-path 1,8 $X
    step small_latency 70 --preset $S --res $RES --views 1,8 --compile $C --graphs --checks $X
    # throughput + memory (S >= 2): regional compile with dynamic shapes, 16 GiB fit last
    step large_throughput 300 --preset $L --res $RES --views 2,4,16,32,128,$BIG \
      --compile regions-dynamic --graphs --iters 5 --warmup 2 --fit-16gib $X
    if [[ $PHASE == full ]] && (( $(left) > 40 )); then
      echo "## attention micro-benchmark"
      timeout $(( $(left) - 5 )) $PY bench/attn_micro.py 128 512 2>&1 | tee -a "$OUT/log.txt"
    fi
    ;;
  final|dryfinal)
    # call 3: what call 2 ran out of time for (checks, node path, small S=8) + the 16 GiB fit
    if [[ $PHASE == dryfinal ]]; then
      L=da3-small; RES=112x84; X="--iters 1 --warmup 1"; C=none; FG=8,8; BUDGET=${BUDGET:-1200}
    else C=default; FG=480,180; fi
    step large_latency2 150 --preset $L --res $RES --views 1,8 --compile $C --graphs --checks \
      --node-path 1,8 $X
    step small_latency2 50 --preset $S --res $RES --views 8 --compile $C --graphs --checks $X
    if [[ $PHASE == final ]]; then
      echo "## attention micro-benchmark"
      timeout 60 $PY bench/attn_micro.py 128 512 2>&1 | tee -a "$OUT/log.txt"
    fi
    # eager ours (no compile), fragmentation-resistant allocator for both, one model on the GPU
    export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
    step fit16 120 --preset $L --res $RES --views "" --fit-16gib --fit-guess $FG $X
    unset PYTORCH_CUDA_ALLOC_CONF
    ;;
esac
echo "## done in $(( SECONDS - T0 )) s"
