#!/usr/bin/env bash
# The device calls of one GPU session, in order, on one machine kept warm between them (issues 13
# and 14). Run from the repository root on the GPU machine:
#   bash bench/gpu_session.sh CALL [OUTDIR]
#   call 1, carry .whl/ros .whl/tools .whl/upstream: install them; the live node at fixed rates,
#           eager (accelerate off), a py-spy profile, the upstream wrapper's row; our saturation
#   call 2, carry .whl/flash_part1: flash-attn-4 stage 1; the upstream wrapper's saturation;
#           accelerate auto (background compile) at 60 Hz
#   call 3, carry .whl/flash_part2: stage 2; saturation with compile_graphs, da3-large and da3-small
#   call 4, carry .whl/flash_part3 .whl/flash: stage 3 (install flash-attn-4) + bench/flash_check.py
# A second session's plan (after batching the window's device work), same carries:
#   call 5 (as 1): install; saturation with compile_graphs (da3-large, da3-small) + upstream's
#   call 6 (as 2): flash stage 1; accelerate auto at 60 Hz; the shipped config at 30 Hz
#   call 7 (as 3): flash stage 2; compile_graphs at 150 Hz under py-spy
#   call 8 (as 4): flash stage 3; da3-bench, torch.compile, S = 32 and 128, against upstream
# A third session's plan (the pipeline in an inference process):
#   call 9 (as 1): install; saturation in the inference process (da3-large, da3-small) and the
#           upstream wrapper's
#   call 10: the worker thread's saturation (inference_process off); 200 Hz under py-spy; the
#           shipped config at 30 Hz
# A fourth session's plan (results framed in the inference process, published with the GIL
# released; then the compiled flash-attn-4 comparison of issue 14), one machine kept warm:
#   call 11 (carry .whl/ros .whl/tools .whl/upstream): install; live phase proc3
#   call 12 (carry .whl/flash_part1): flash stage 1; live phase upstream4
#   call 13 (carry .whl/flash_part2): flash stage 2; live phase shipped3
#   call 14 (carry .whl/flash_part3 .whl/flash): as call 8 (stage 3; da3-bench, compile, S = 32, 128)
# Its second try (call 11 ran; the machine went idle before call 12), with only what fits the
# device time left after two refusals: the flash chain first, then the heap-kept buffers:
#   call 16 (carry .whl/flash_part1): flash stage 1
#   call 17 (carry .whl/flash_part2): flash stage 2
#   call 18 (carry .whl/flash_part3 .whl/flash .whl/upstream): stage 3; da3-bench, compile,
#           S = 32, 128 (shorter)
#   call 19 (carry .whl/ros .whl/tools .whl/upstream): install; live phase proc4
#   call 20 (same machine, nothing carried): bash bench/live/run_gpu.sh malloc_ab OUT
# A fifth session (images and clouds published on two threads, chaining in place):
#   call 21 (carry .whl/ros .whl/tools .whl/upstream): install; live phase proc5
#   call 22 (same machine, nothing carried): live phase proc6
#   (call 22 did not run: the machine went idle while call 21's results were read, and the
#   device time left after refused starts went to call 23.) After the camera thread and the
#   pinned copies, the last two calls, back to back (call 24 did not run either):
#   call 23 (carry .whl/ros .whl/tools .whl/upstream): install; live phase proc7
#   call 24 (same machine, nothing carried): live phase proc8
# A sixth session (a window finished on a thread of its own beside the next network), back to
# back, both carrying .whl/ros .whl/tools .whl/upstream:
#   call 25: install; live phase proc9
#   call 26: (install if the machine is fresh); live phase proc10
#   then (same carry) the latency phase (num_view 1 at 30 Hz), and call 27: live phase proc11
# DRY=1 runs the live steps with tiny CPU settings here (checks the script, not the numbers).
set -u -o pipefail
CALL=${1:?call number}
OUT=${2:-${OUT:-/tmp/gpu_out}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
LIVE="bench/live/run_gpu.sh"

kit() {  # the ROS, tools and upstream wheels carried in call 1 (the machine keeps them while warm)
  if ls .whl/ros/*.whl >/dev/null 2>&1 && ! $PY -c "import rclpy" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile .whl/ros/*.whl .whl/tools/*.whl \
      .whl/upstream/*.whl 2>&1 | tail -3
  fi
}

live() {  # live PHASE BUDGET: one phase of bench/live/run_gpu.sh into $OUT/PHASE ($BUDGET, if set, wins)
  BUDGET=${BUDGET:-$2} bash $LIVE "$1" "$OUT/$1"
}

case $CALL in
  1)
    kit
    live runs 330
    live sat_ours 180
    ;;
  2)
    bash bench/device_install_flash.sh stage1 || echo "## flash stage1 failed (live steps go on)"
    live sat_upstream 160
    live auto 180
    ;;
  3)
    bash bench/device_install_flash.sh stage2 || echo "## flash stage2 failed (live steps go on)"
    live sat_graphs 310
    ;;
  4)
    bash bench/device_install_flash.sh stage3 && \
      timeout 300 $PY bench/flash_check.py --out "$OUT/flash" --budget ${FLASH_BUDGET:-240} 2>&1 \
      | tee "$OUT/flash_check.log"
    ;;
  5)
    kit
    live sat2 540
    ;;
  6)
    bash bench/device_install_flash.sh stage1 || echo "## flash stage1 failed (live steps go on)"
    live auto2 330
    ;;
  7)
    bash bench/device_install_flash.sh stage2 || echo "## flash stage2 failed (live steps go on)"
    live profile2 200
    ;;
  8)
    mkdir -p "$OUT/fa4_compiled"
    bash bench/device_install_flash.sh stage3 && \
      timeout $(( ${FA4_SECONDS:-380} + 40 )) $PY -m bench --preset da3-large --res 504x378 --views 32,128 \
        --compile default --iters 2 --warmup 1 --no-flops --max-seconds ${FA4_SECONDS:-380} --json "$OUT/fa4_compiled/report.json" 2>&1 \
      | tee "$OUT/fa4_compiled/log.txt"
    ;;
  9)
    kit
    live proc 550
    ;;
  10)
    live proc2 520
    ;;
  11)
    kit
    live proc3 500
    ;;
  12)
    bash bench/device_install_flash.sh stage1 || echo "## flash stage1 failed (live steps go on)"
    live upstream4 170
    ;;
  13)
    bash bench/device_install_flash.sh stage2 || echo "## flash stage2 failed (live steps go on)"
    live shipped3 180
    ;;
  14)
    bash "$0" 8 "$OUT"; exit $?
    ;;
  16)
    bash bench/device_install_flash.sh stage1
    ;;
  17)
    bash bench/device_install_flash.sh stage2
    ;;
  18)  # also carry .whl/upstream: the comparison runs upstream in the same process
    if ls .whl/upstream/*.whl >/dev/null 2>&1 && ! $PY -c "import depth_anything_3" 2>/dev/null; then
      $PY -m pip install -q --no-index --no-deps --no-compile .whl/upstream/*.whl 2>&1 | tail -3
    fi
    FA4_SECONDS=${FA4_SECONDS:-300} bash "$0" 8 "$OUT"; exit $?
    ;;
  19)
    kit
    live proc4 450
    ;;
  21)
    kit
    live proc5 500
    ;;
  22)
    live proc6 560
    ;;
  23)
    kit
    live proc7 440
    ;;
  24)
    live proc8 300
    ;;
  25)
    kit
    live proc9 480
    ;;
  26)
    kit  # the same carry as 25: a fresh machine (25's went idle) installs it again
    live proc10 500
    ;;
  27)
    kit
    live proc11 230
    ;;
  *) echo "unknown call $CALL (1-27)"; exit 2 ;;
esac
echo "## call $CALL done"
# what comes back from a device call is at most 8 files: one archive of everything, and the logs
grep -h "^## \|^da3 \|^upstream \|^saturate\|rate found\|flash_attn\|TFLOP" "$OUT"/*/log.txt "$OUT"/*.log \
  > /tmp/summary_call$CALL.txt 2>/dev/null
tar czf /tmp/call$CALL.tgz -C "$OUT" . && rm -rf "${OUT:?}"/* && mv /tmp/call$CALL.tgz /tmp/summary_call$CALL.txt "$OUT"/
