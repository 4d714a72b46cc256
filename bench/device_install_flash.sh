#!/usr/bin/env bash
# Install flash-attn-4 (requirements-flash.txt, the set verified in shared/docs/ENVIRONMENT.md)
# on the GPU machine from wheels carried in .whl/, in two device calls on one warm machine,
# because nvidia-cutlass-dsl-libs-cu13 (92 MB) is larger than what one call can carry (64 MiB):
#
#   call 1, carry .whl/flash_part1:             bash bench/device_install_flash.sh stage1
#   call 2, carry .whl/flash_part2 .whl/flash:  bash bench/device_install_flash.sh stage2
#
# stage1 keeps part 1 of the split wheel in /tmp (which lives as long as the machine stays
# warm); stage2 joins both parts, checks the whole wheel's sha256, installs every wheel into
# the interpreter's own environment and checks `from flash_attn.cute import flash_attn_func`.
# Not with --target: three of the wheels share the top-level folder nvidia_cutlass_dsl, and a
# .pth file of nvidia-cutlass-dsl puts its dsl_packages folder on sys.path.
# Env: PY (python3), WHL (.whl), STASH (/tmp/da3_flash_whl).
set -euo pipefail
STAGE=${1:?usage: device_install_flash.sh stage1|stage2}
PY=${PY:-python3}
WHL=${WHL:-.whl}
STASH=${STASH:-/tmp/da3_flash_whl}
CU13=nvidia_cutlass_dsl_libs_cu13-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl
CU13_SHA256=50191a381d8cc1393373ae0bc879b0aefa9a256c23c22d4fa1c2fe3dfe57bc90
PART1_SHA256=2aa8de823f0fd32621198a23d262ea2608a32dbaea108cb3b2f21935583e3104
PART2_SHA256=0027d093029be99b4281340cdac2bad1b867418d9744f46460e0fbd2ef85f3aa
WHEELS=(flash_attn_4-4.0.0b36-py3-none-any.whl
        nvidia_cutlass_dsl-4.8.1-py3-none-any.whl
        nvidia_cutlass_dsl_libs_base-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl
        nvidia_cutlass_dsl_libs_core-4.8.1-py3-none-any.whl
        apache_tvm_ffi-0.1.15.post2-cp312-cp312-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl
        torch_c_dlpack_ext-0.1.5-cp312-cp312-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl
        quack_kernels-0.6.5-py3-none-any.whl)

check_sha() {  # check_sha FILE SHA256
  local got; got=$(sha256sum "$1" | cut -d' ' -f1)
  if [[ $got != "$2" ]]; then echo "sha256 mismatch for $1: $got, expected $2" >&2; exit 1; fi
}

case $STAGE in
  stage1)
    src=$WHL/flash_part1/$CU13.part1
    [[ -f $src ]] || { echo "missing $src: carry .whl/flash_part1 in this call" >&2; exit 1; }
    check_sha "$src" $PART1_SHA256
    mkdir -p "$STASH"
    cp "$src" "$STASH/"
    echo "part 1 kept in $STASH ($(du -h "$STASH/$CU13.part1" | cut -f1)); run stage2 on this warm machine"
    ;;
  stage2)
    part1=$STASH/$CU13.part1
    [[ -f $part1 ]] || part1=$WHL/flash_part1/$CU13.part1  # if call 1's carried folder survived
    if [[ ! -f $part1 ]]; then
      echo "part 1 is neither in $STASH nor in $WHL/flash_part1: the machine was not the one" \
           "that ran stage1 (it went cold?); run stage1 again, then stage2" >&2
      exit 1
    fi
    part2=$WHL/flash_part2/$CU13.part2
    [[ -f $part2 ]] || { echo "missing $part2: carry .whl/flash_part2 in this call" >&2; exit 1; }
    for w in "${WHEELS[@]}"; do
      [[ -f $WHL/flash/$w ]] || { echo "missing $WHL/flash/$w: carry .whl/flash in this call" >&2; exit 1; }
    done
    check_sha "$part1" $PART1_SHA256
    check_sha "$part2" $PART2_SHA256
    mkdir -p "$STASH"
    cat "$part1" "$part2" > "$STASH/$CU13"
    check_sha "$STASH/$CU13" $CU13_SHA256
    echo "joined $CU13, sha256 ok"
    args=(-m pip install -q --no-index --no-deps --no-compile "${WHEELS[@]/#/$WHL/flash/}" "$STASH/$CU13")
    if ! out=$($PY "${args[@]}" 2>&1); then
      if grep -q externally-managed <<<"$out"; then  # PEP 668 image: this is the interpreter we mean
        $PY "${args[@]}" --break-system-packages
      else
        echo "$out" >&2; exit 1
      fi
    fi
    $PY - <<'EOF'
import importlib.metadata as md
import torch
from flash_attn.cute import flash_attn_func  # noqa: F401
import cutlass
names = ["flash-attn-4", "nvidia-cutlass-dsl", "nvidia-cutlass-dsl-libs-base", "nvidia-cutlass-dsl-libs-core",
         "nvidia-cutlass-dsl-libs-cu13", "apache-tvm-ffi", "torch-c-dlpack-ext", "quack-kernels"]
print("flash-attn-4 imports:", ", ".join(f"{n} {md.version(n)}" for n in names))
print("torch", torch.__version__, "cutlass at", cutlass.__file__)
if torch.cuda.is_available():
    print("GPU", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability())
EOF
    ;;
  *) echo "unknown stage $STAGE (stage1 | stage2)" >&2; exit 2 ;;
esac
