#!/usr/bin/env bash
# One device call of the live-node benchmark (issue 13): each step time-guarded so the call ends
# inside the device's per-call limit; every step's command is echoed into $OUT/log.txt.
#   bash bench/live/run_gpu.sh PHASE [OUTDIR]      # GPU machine, repository root
#   DRY=1 bash bench/live/run_gpu.sh PHASE [OUTDIR] # this CPU machine: tiny model, short, checks the script
# PHASE: runs (targets at fixed rates, eager, the 60 Hz one under py-spy, + an upstream wrapper
# row), sat_ours / sat_upstream (num_view 8 / stride 8 saturation: da3-large eager, the upstream
# wrapper), auto (accelerate auto at 60 Hz through its background compile), sat_graphs
# (saturation with compile_graphs, da3-large and da3-small), latency (num_view 1 at 30 Hz with
# compile_graphs), small (da3-small saturation, da3-large again for the ratio), camera (the bench
# alone against the stand-in node: thread or process camera at 150 / 300 Hz); sat2 (saturation
# after the batched device work: compile_graphs da3-large from 100 Hz, da3-small from 150 Hz, and
# the upstream wrapper again), auto2 (auto at 60 Hz; config/da3.yaml as shipped at 30 Hz),
# profile2 (compile_graphs at 150 Hz under py-spy), gil (150 Hz with the GIL switch interval at 1 ms
# and at 5 ms, then saturation); proc (saturation in the inference process: da3-large, da3-small,
# and the upstream wrapper's), proc2 (the worker thread instead, 200 Hz under py-spy, the shipped
# config at 30 Hz); proc3 (results framed as messages in the inference process, published from
# shared memory with the GIL released: da3-large and da3-small saturation, da3-small at 300 Hz
# under py-spy), proc4 (proc3's saturations with the large buffers kept in the heap), malloc_ab
# (that alone, A/B at 250 Hz), upstream4 (the upstream wrapper's saturation), shipped3 (config/da3.yaml
# at 30 Hz), proc5 (publish_threads and in-place chaining: da3-small's saturation, 400 Hz under py-spy,
# at 300 Hz with publish_threads 0, and with queue_size 8), proc6 (after proc5: da3-large's saturation,
# the upstream wrapper's, config/da3.yaml at 30 Hz), proc7 (cameras on their own thread, images in
# pinned memory: the pinned upload checked, then da3-small's and da3-large's saturations), proc8
# (after proc7: the upstream wrapper's saturation, config/da3.yaml at 30 Hz), proc9 (the finishing
# thread: its results checked, da3-small's and da3-large's saturations), proc10 (after proc9:
# da3-small with finish_thread off, the upstream wrapper's saturation, config/da3.yaml at 30 Hz),
# proc11 (num_view 8 at 60 Hz; da3-small at 675 Hz under py-spy).
# ROS on the GPU machine: cp312 ros-* wheels (ENVIRONMENT.md "The real node on the GPU machine"),
# installed from $WHL (default .whl/ros) when rclpy does not import; without ros-wheels-bootstrapper
# the ROS libraries must be on LD_LIBRARY_PATH before Python starts, which this script exports.
set -u -o pipefail
PHASE=${1:-runs}
OUT=${2:-${OUT:-/tmp/live_out}}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export FASTDDS_DEFAULT_PROFILES_FILE=$PWD/config/fastdds_localhost.xml ROS_LOG_DIR=$OUT/ros_logs
unset ROS_AUTOMATIC_DISCOVERY_RANGE RMW_IMPLEMENTATION ROS_LOCALHOST_ONLY
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( $$ % 90 + 5 ))}
if ! $PY -c "import ros_wheels_bootstrapper" 2>/dev/null; then
  SITE=$($PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  if ! $PY -c "import rclpy" 2>/dev/null && ls "${WHL:-.whl/ros}"/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps "${WHL:-.whl/ros}"/*.whl
  fi
  LIBS=$(ls -d "$SITE"/ros_*.libs 2>/dev/null | paste -sd: -)
  export LD_LIBRARY_PATH=$($PY -c "import sys; print(sys.prefix)")/lib${LIBS:+:$LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
T0=$SECONDS
left() { echo $(( ${BUDGET:-540} - (SECONDS - T0) )); }
step() {  # step NAME MAXSEC ARGS... : python -m bench.live ARGS --out $OUT/NAME, killed at MAXSEC
  local name=$1 max=$2; shift 2
  local l; l=$(left)
  if (( l < 30 )); then echo "## skip $name: $l s left" | tee -a "$OUT/log.txt"; return; fi
  (( max > l - 10 )) && max=$(( l - 10 ))
  echo "## $name (max $max s, $l s left): python -m bench.live $* --out \$OUT/$name" | tee -a "$OUT/log.txt"
  timeout -s INT -k 40 "$max" $PY -m bench.live "$@" --out "$OUT/$name" 2>&1 | tee -a "$OUT/log.txt"
}
if [[ ${DRY:-0} == 1 ]]; then
  L="--set model=default --set process_res=56 --set device=cpu"; S=$L; AW=4; WR=120
  UP="--node upstream --set model=da3-small --set process_res=56 --set device=cpu"
  RATE1=5; RATE8=5; D="--duration 4 --warmup 2"; SAT="--start-rate 2 --max-rate 8 --step-duration 3 --refine 1"
  SAT2=$SAT; SAT2S=$SAT; SAT3=$SAT; SAT3S=$SAT; SAT4S=$SAT; SAT5S=$SAT; RATE_HI=8; RATE_PROF=8; RATE_SMALL=8; RATE_AB=8
  RATE_PROF5=8; RATE_AB5=8; SAT7S=$SAT; RATE_PROF11=8
  BUDGET=${BUDGET:-900}
else
  L="--set model=da3-large --set device=cuda"; S="--set model=da3-small --set device=cuda"
  UP="--node upstream --set model=da3-large --set device=cuda"
  RATE1=30; RATE8=60; D="--duration 15 --warmup 5"; SAT="--start-rate 16 --max-rate 512 --step-duration 6 --refine 2"
  SAT2="--start-rate 100 --max-rate 400 --step-duration 6 --refine 2"; RATE_HI=150; RATE_PROF=200
  SAT2S="--start-rate 150 --max-rate 600 --step-duration 6 --refine 2"
  SAT3="--start-rate 150 --max-rate 600 --step-duration 6 --refine 2"
  SAT3S="--start-rate 190 --max-rate 800 --step-duration 6 --refine 2"; RATE_SMALL=300
  SAT4S="--start-rate 200 --max-rate 800 --step-duration 6 --refine 2"; RATE_AB=250
  SAT5S="--start-rate 250 --max-rate 1000 --step-duration 6 --refine 2"; RATE_PROF5=350; RATE_AB5=300
  SAT7S="--start-rate 300 --max-rate 1200 --step-duration 6 --refine 2"; RATE_PROF11=675
  AW=100; WR=400
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
fi
$PY -c "import torch, rclpy; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
NV1="--set num_view=1 --set stride=1"; NV8="--set num_view=8 --set stride=8"
OFF="--set accelerate=off"; AUTO="--set accelerate=auto"; CG="--set accelerate=compile_graphs"
# the camera in its own process: on the GPU the recorder takes every output (hundreds of MB/s of
# depth, confidence, colour images and clouds at 150+ frames/s) and must not delay the camera
CAM="--camera-mode process"
case $PHASE in
  runs)
    step large_nv1_30hz 100 run $L $OFF $NV1 --rate $RATE1 $D $CAM
    step large_nv8_60hz_pyspy 100 run $L $OFF $NV8 --rate $RATE8 $D --py-spy active $CAM
    step large_defaults_30hz 100 run --params config/da3.yaml $L $OFF --rate $RATE1 $D $CAM
    step upstream_large_nv1_30hz 120 run $UP $NV1 --rate $RATE1 $D --settle 10 $CAM
    ;;
  sat_ours)
    step large_nv8_saturate 170 saturate $L $OFF $NV8 $SAT --warmup 5 $CAM
    ;;
  sat_upstream)
    step upstream_large_nv8_saturate 150 saturate $UP $NV8 $SAT --warmup 5 --settle 10 $CAM
    ;;
  auto)
    step large_nv8_60hz_auto $(( AW + 60 )) run $L $AUTO $NV8 --rate $RATE8 --duration 15 --warmup $AW $CAM
    ;;
  sat_graphs)
    step large_nv8_saturate_graphs 150 saturate $L $CG $NV8 $SAT --warmup 5 --wait-ready $WR $CAM
    step small_nv8_saturate_graphs 150 saturate $S $CG $NV8 $SAT --warmup 5 --wait-ready $WR $CAM
    ;;
  latency)
    step large_nv1_30hz_graphs 150 run $L $CG $NV1 --rate $RATE1 $D --wait-ready $WR $CAM
    ;;
  small)
    step small_nv8_saturate 250 saturate $S $NV8 $SAT --warmup 5 $CAM
    step large_nv8_saturate2 250 saturate $L $NV8 $SAT --warmup 5 $CAM
    ;;
  sat2)  # after batching the per-view device work: saturation from near the last result up
    step large_nv8_saturate_graphs2 200 saturate $L $CG $NV8 $SAT2 --warmup 5 --wait-ready $WR $CAM
    step small_nv8_saturate_graphs2 170 saturate $S $CG $NV8 $SAT2S --warmup 5 --wait-ready $WR $CAM
    step upstream_large_nv8_saturate2 150 saturate $UP $NV8 $SAT --warmup 5 --settle 10 $CAM
    ;;
  auto2)  # accelerate auto (background compile) at 60 Hz, and the shipped defaults (auto) at 30 Hz
    step large_nv8_60hz_auto2 $(( AW + 60 )) run $L $AUTO $NV8 --rate $RATE8 --duration 15 --warmup $AW $CAM
    step large_defaults_auto_30hz $(( AW + 60 )) run --params config/da3.yaml $L --rate $RATE1 --duration 15 --warmup $AW $CAM
    ;;
  profile2)  # compiled, at the target rate, under py-spy: what is left on the host
    step large_nv8_150hz_graphs_pyspy 170 run $L $CG $NV8 --rate $RATE_HI $D --py-spy active --wait-ready $WR $CAM
    ;;
  gil)  # after the newest-first static check and the 1 ms GIL switch interval: 150 Hz, A/B on
    # the interval (Python's default 5 ms), then the saturation search again
    step large_nv8_150hz_graphs_gil1ms 150 run $L $CG $NV8 --rate $RATE_HI --duration 12 --warmup 5 --wait-ready $WR $CAM
    export DA3_GIL_SWITCH_INTERVAL_S=0.005
    step large_nv8_150hz_graphs_gil5ms 110 run $L $CG $NV8 --rate $RATE_HI --duration 12 --warmup 5 --wait-ready $WR $CAM
    unset DA3_GIL_SWITCH_INTERVAL_S
    step large_nv8_saturate_graphs3 170 saturate $L $CG $NV8 $SAT2 --warmup 5 --wait-ready $WR $CAM
    ;;
  proc)  # the pipeline in an inference process (inference_process on, the CUDA default now):
    # saturation of da3-large and da3-small, compile_graphs, and the upstream wrapper's for the ratio
    P="--set inference_process=on"
    step large_nv8_saturate_graphs_proc 220 saturate $L $CG $NV8 $P $SAT2 --warmup 5 --wait-ready $WR $CAM
    step small_nv8_saturate_graphs_proc 170 saturate $S $CG $NV8 $P $SAT2S --warmup 5 --wait-ready $WR $CAM
    step upstream_large_nv8_saturate3 140 saturate $UP $NV8 $SAT --warmup 5 --settle 10 $CAM
    ;;
  proc2)  # the same node with the worker thread in the node (inference_process off), same search;
    # where the time goes at 200 Hz in the process design (py-spy, both processes); the shipped
    # config (accelerate auto) at 30 Hz
    T="--set inference_process=off"
    step large_nv8_saturate_graphs_thread 160 saturate $L $CG $NV8 $T $SAT2 --warmup 5 --wait-ready $WR $CAM
    step large_nv8_200hz_graphs_proc_pyspy 120 run $L $CG $NV8 --rate $RATE_PROF $D --py-spy active --wait-ready $WR $CAM
    step large_defaults_auto_30hz_proc $(( AW + 60 )) run --params config/da3.yaml $L --rate $RATE1 --duration 15 --warmup $AW $CAM
    ;;
  proc3)  # the worker frames each published map and the cloud as its message in shared memory and
    # the node publishes them from there through rcl with the GIL released (call 11): saturation of
    # da3-large and da3-small, then da3-small past its rate under py-spy (where the time goes now)
    P="--set inference_process=on"
    step large_nv8_saturate_graphs_proc3 190 saturate $L $CG $NV8 $P $SAT3 --warmup 5 --wait-ready $WR $CAM
    step small_nv8_saturate_graphs_proc3 200 saturate $S $CG $NV8 $P $SAT3S --warmup 5 --wait-ready $WR $CAM
    step small_nv8_${RATE_SMALL}hz_graphs_proc3_pyspy 90 run $S $CG $NV8 $P --rate $RATE_SMALL $D --py-spy active --wait-ready $WR $CAM
    ;;
  proc4)  # proc3's saturations again with the node's large buffers kept in the heap
    # (inference/allocator.py); the allocator's A/B alone is phase malloc_ab (in call 19 it ran here
    # with a 45 s cap per run, too short for the node's start, and both runs were cut)
    P="--set inference_process=on"
    step large_nv8_saturate_graphs_proc4 170 saturate $L $CG $NV8 $P $SAT3 --warmup 5 --wait-ready $WR $CAM
    step small_nv8_saturate_graphs_proc4 180 saturate $S $CG $NV8 $P $SAT4S --warmup 5 --wait-ready $WR $CAM
    ;;
  malloc_ab)  # da3-small at 250 Hz with glibc's defaults (DA3_MALLOC_TUNING=0), then tuned (call 20)
    P="--set inference_process=on"
    DA3_MALLOC_TUNING=0 step small_nv8_${RATE_AB}hz_graphs_proc4_malloc_default 85 run $S $CG $NV8 $P --rate $RATE_AB --duration 12 --warmup 4 --wait-ready $WR $CAM
    step small_nv8_${RATE_AB}hz_graphs_proc4_malloc_tuned 85 run $S $CG $NV8 $P --rate $RATE_AB --duration 12 --warmup 4 --wait-ready $WR $CAM
    ;;
  proc5)  # publish_threads (images and clouds sent on two threads) and the in-place chaining (call
    # 21): da3-small's saturation, then past it under py-spy, then at 300 Hz with publish_threads 0,
    # and with queue_size 8 (the old default: one window of new frames; auto now holds two)
    P="--set inference_process=on"
    step small_nv8_saturate_graphs_proc5 200 saturate $S $CG $NV8 $P $SAT5S --warmup 5 --wait-ready $WR $CAM
    step small_nv8_${RATE_PROF5}hz_graphs_proc5_pyspy 90 run $S $CG $NV8 $P --rate $RATE_PROF5 $D --py-spy active --wait-ready $WR $CAM
    step small_nv8_${RATE_AB5}hz_graphs_proc5_pt0 75 run $S $CG $NV8 $P --set publish_threads=0 --rate $RATE_AB5 --duration 12 --warmup 4 --wait-ready $WR $CAM
    step small_nv8_${RATE_AB5}hz_graphs_proc5_q8 75 run $S $CG $NV8 $P --set queue_size=8 --rate $RATE_AB5 --duration 12 --warmup 4 --wait-ready $WR $CAM
    ;;
  proc6)  # right after proc5 on the same machine (call 22): da3-large's saturation for the ratio,
    # the upstream wrapper's, and config/da3.yaml as shipped at 30 Hz
    P="--set inference_process=on"
    step large_nv8_saturate_graphs_proc6 190 saturate $L $CG $NV8 $P $SAT3 --warmup 5 --wait-ready $WR $CAM
    step upstream_large_nv8_saturate6 120 saturate $UP $NV8 $SAT --warmup 5 --settle 10 $CAM
    step large_defaults_auto_30hz_proc6 $(( AW + 60 )) run --params config/da3.yaml $L --rate $RATE1 --duration 15 --warmup $AW $CAM
    ;;
  proc7)  # the cameras on a thread of their own, images copied out into pinned memory (call 23):
    # the pinned upload checked first, then da3-small's and da3-large's saturations
    P="--set inference_process=on"
    if [[ ${DRY:-0} != 1 ]]; then
      timeout 60 $PY bench/pinned_check.py 2>&1 | tee -a "$OUT/log.txt" || { echo "## pinned check failed: stop"; exit 1; }
    fi
    step small_nv8_saturate_graphs_proc7 210 saturate $S $CG $NV8 $P $SAT7S --warmup 5 --wait-ready $WR $CAM
    step large_nv8_saturate_graphs_proc7 190 saturate $L $CG $NV8 $P $SAT3 --warmup 5 --wait-ready $WR $CAM
    ;;
  proc8)  # right after proc7 on the same machine (call 24): the upstream wrapper's saturation and
    # config/da3.yaml as shipped at 30 Hz
    step upstream_large_nv8_saturate8 120 saturate $UP $NV8 $SAT --warmup 5 --settle 10 $CAM
    step large_defaults_auto_30hz_proc8 $(( AW + 60 )) run --params config/da3.yaml $L --rate $RATE1 --duration 15 --warmup $AW $CAM
    ;;
  proc9)  # the finishing thread (sixth session, call 25): its results checked against the worker's
    # and the pipeline alone timed both ways (bench/finish_check.py), then da3-small's and
    # da3-large's saturations with the defaults (finish_thread on)
    P="--set inference_process=on"
    if [[ ${DRY:-0} == 1 ]]; then FC="--device cpu --model default --process-res 56 --frames 24"; else FC=""; fi
    echo "## finish check: python bench/finish_check.py $FC" | tee -a "$OUT/log.txt"
    timeout 150 $PY bench/finish_check.py $FC 2>&1 | tee -a "$OUT/log.txt"
    (( ${PIPESTATUS[0]} == 0 )) || { echo "## finish check failed: stop" | tee -a "$OUT/log.txt"; exit 1; }
    step small_nv8_saturate_graphs_proc9 210 saturate $S $CG $NV8 $P $SAT7S --warmup 5 --wait-ready $WR $CAM
    step large_nv8_saturate_graphs_proc9 190 saturate $L $CG $NV8 $P $SAT3 --warmup 5 --wait-ready $WR $CAM
    ;;
  proc10)  # right after proc9 on the same machine (call 26): da3-small with finish_thread off (the
    # A/B), the upstream wrapper's saturation, config/da3.yaml as shipped at 30 Hz
    P="--set inference_process=on"
    step small_nv8_saturate_graphs_nofinish_proc10 210 saturate $S $CG $NV8 $P --set finish_thread=false $SAT7S --warmup 5 --wait-ready $WR $CAM
    step upstream_large_nv8_saturate10 120 saturate $UP $NV8 $SAT --warmup 5 --settle 10 $CAM
    step large_defaults_auto_30hz_proc10 $(( AW + 60 )) run --params config/da3.yaml $L --rate $RATE1 --duration 15 --warmup $AW $CAM
    ;;
  proc11)  # after proc10 (call 27): the num_view 8 / 60 Hz target with the finishing thread, and
    # da3-small past its saturation under py-spy (where it stops next)
    P="--set inference_process=on"
    step large_nv8_${RATE8}hz_graphs_proc11 110 run $L $CG $NV8 $P --rate $RATE8 $D --wait-ready $WR $CAM
    step small_nv8_${RATE_PROF11}hz_graphs_proc11_pyspy 100 run $S $CG $NV8 $P --rate $RATE_PROF11 $D --py-spy active --wait-ready $WR $CAM
    ;;
  upstream4)  # the upstream wrapper's saturation, on the machine of proc3 (call 12)
    step upstream_large_nv8_saturate4 120 saturate $UP $NV8 $SAT --warmup 5 --settle 10 $CAM
    ;;
  shipped3)  # config/da3.yaml as shipped (accelerate auto, inference process) at 30 Hz (call 13)
    step large_defaults_auto_30hz_proc3 $(( AW + 60 )) run --params config/da3.yaml $L --rate $RATE1 --duration 15 --warmup $AW $CAM
    ;;
  camera)  # the bench alone (stand-in node): does the synthetic camera keep up, thread or process?
    for rate in 150 300; do for mode in thread process; do
      step sink_${rate}hz_$mode 60 run --node sink --rate $rate --duration 10 --warmup 2 --camera-mode $mode
    done; done
    step sink_rig4_150hz_thread 60 run --node sink --cameras 4 --rate 150 --duration 10 --warmup 2
    ;;
  *) echo "unknown phase $PHASE (runs | sat_ours | sat_upstream | auto | sat_graphs | latency | small | camera | sat2 | auto2 | profile2 | gil | proc | proc2 | proc3 | proc4 | malloc_ab | proc5 | proc6 | proc7 | proc8 | proc9 | proc10 | proc11 | upstream4 | shipped3)"; exit 2 ;;
esac
echo "## done in $(( SECONDS - T0 )) s; reports under $OUT" | tee -a "$OUT/log.txt"
