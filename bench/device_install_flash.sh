#!/usr/bin/env bash
# Install flash-attn-4 (requirements-flash.txt, the set verified in shared/docs/ENVIRONMENT.md)
# on the GPU machine from wheels carried in .whl/, over three device calls on one warm machine.
#
# What one call can send is 64 MiB including the working tree (about 22 MiB of tracked files),
# so nvidia-cutlass-dsl-libs-cu13 (87.7 MiB) travels split in three parts:
#   call 1, carry .whl/flash_part1 (38.0 MiB):             bash bench/device_install_flash.sh stage1
#   call 2, carry .whl/flash_part2 (38.0 MiB):             bash bench/device_install_flash.sh stage2
#   call 3, carry .whl/flash_part3 .whl/flash (21.4 MiB):  bash bench/device_install_flash.sh stage3
#
# stage1 and stage2 keep their part in /tmp (it lives as long as the machine stays warm).
# stage3 joins the three parts, checks the sha256 of every part, of the whole wheel and of the
# other wheels, installs them all into the interpreter's own environment and checks
# `from flash_attn.cute import flash_attn_func`; it exits non-zero unless that import works.
# Not with --target: three of the wheels share the top-level folder nvidia_cutlass_dsl, and a
# .pth file of nvidia-cutlass-dsl puts its dsl_packages folder on sys.path.
# Env: PY (python3), WHL (.whl), STASH (/tmp/da3_flash_whl).
set -euo pipefail
STAGE=${1:-}
PY=${PY:-python3}
WHL=${WHL:-.whl}
STASH=${STASH:-/tmp/da3_flash_whl}
CU13=nvidia_cutlass_dsl_libs_cu13-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl
CU13_SHA256=50191a381d8cc1393373ae0bc879b0aefa9a256c23c22d4fa1c2fe3dfe57bc90
declare -A PART_SHA256=(
  [1]=8474cf10fcf10b6068e0ba6299e13c01d9c3408cde5812dd8d509354f41c2a7a
  [2]=5cf9c8b8802cd8d5c187fcfa09373c43d136fa246405ad0ce4331d73a5a3ea36
  [3]=8cc71f68e4a88b4214bc8b0304968c951f1ce7a00371fbf345e1d7d4ecda19dc
)
declare -A WHEEL_SHA256=(
  [flash_attn_4-4.0.0b36-py3-none-any.whl]=b6f0e2a264334cb1b59289ddd309c7c76d3a8d184268316b43403e51ba8795d2
  [nvidia_cutlass_dsl-4.8.1-py3-none-any.whl]=43ed46b21d151aa643c6765457c7310827b938c1cf45d5109a0152de4ef06227
  [nvidia_cutlass_dsl_libs_base-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl]=ac2fd8c7fa3d6ded00917fa7cba8686061005da8c4703c6a29e03c1504543909
  [nvidia_cutlass_dsl_libs_core-4.8.1-py3-none-any.whl]=bacc6760e3286db447d45720d32ae58ac2e6cecade1152345ef784b2d5e44431
  [apache_tvm_ffi-0.1.15.post2-cp312-cp312-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl]=059eed9bfc94bcd41650fb8eefde74040a1bc7e7b1a6f0a8ff897b02b118875b
  [torch_c_dlpack_ext-0.1.5-cp312-cp312-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl]=e6f9da4bb9af70e27facc777458be62e10dbbbddda7672d16138db0553c5a524
  [quack_kernels-0.6.5-py3-none-any.whl]=df1ddd31366c82eb9692fe087c671209189dcbde53c909c81a865d4ee66b158d
)

check_sha() {  # check_sha FILE SHA256
  local got; got=$(sha256sum "$1" | cut -d' ' -f1)
  if [[ $got != "$2" ]]; then echo "sha256 mismatch for $1: $got, expected $2" >&2; exit 1; fi
}

keep_part() {  # keep_part N: the carried part N into $STASH (checked)
  local src=$WHL/flash_part$1/$CU13.part$1
  if [[ -f $STASH/$CU13.part$1 && ! -f $src ]]; then echo "part $1 already kept"; return; fi
  [[ -f $src ]] || { echo "missing $src: carry .whl/flash_part$1 in this call" >&2; exit 1; }
  check_sha "$src" "${PART_SHA256[$1]}"
  mkdir -p "$STASH"
  cp "$src" "$STASH/"
  echo "part $1 kept in $STASH ($(du -h "$STASH/$CU13.part$1" | cut -f1))"
}

case $STAGE in
  stage1|stage2)
    keep_part "${STAGE#stage}"
    echo "run the next stage on this warm machine"
    ;;
  stage3)
    keep_part 3
    for i in 1 2; do
      if [[ ! -f $STASH/$CU13.part$i ]]; then
        echo "part $i is not in $STASH: this machine did not run stage$i (it went cold in between?);" \
             "run stage1, stage2 and stage3 again, back to back" >&2
        exit 1
      fi
      check_sha "$STASH/$CU13.part$i" "${PART_SHA256[$i]}"
    done
    cat "$STASH/$CU13.part1" "$STASH/$CU13.part2" "$STASH/$CU13.part3" > "$STASH/$CU13"
    check_sha "$STASH/$CU13" $CU13_SHA256
    wheels=()
    for w in "${!WHEEL_SHA256[@]}"; do
      [[ -f $WHL/flash/$w ]] || { echo "missing $WHL/flash/$w: carry .whl/flash in this call" >&2; exit 1; }
      check_sha "$WHL/flash/$w" "${WHEEL_SHA256[$w]}"
      wheels+=("$WHL/flash/$w")
    done
    echo "joined $CU13; sha256 of all 8 wheels ok"
    args=(-m pip install -q --no-index --no-deps --no-compile "${wheels[@]}" "$STASH/$CU13")
    if ! out=$($PY "${args[@]}" 2>&1); then
      if grep -q externally-managed <<<"$out"; then  # PEP 668 image: this is the interpreter we mean
        $PY "${args[@]}" --break-system-packages
      else
        echo "$out" >&2; exit 1
      fi
    fi
    $PY - <<'EOF'
import importlib.metadata as md
import time

t = time.perf_counter()
import torch
from flash_attn.cute import flash_attn_func  # noqa: F401
import cutlass
names = ["flash-attn-4", "nvidia-cutlass-dsl", "nvidia-cutlass-dsl-libs-base", "nvidia-cutlass-dsl-libs-core",
         "nvidia-cutlass-dsl-libs-cu13", "apache-tvm-ffi", "torch-c-dlpack-ext", "quack-kernels"]
print(f"flash_attn.cute imports ({time.perf_counter() - t:.1f} s):", ", ".join(f"{n} {md.version(n)}" for n in names))
print("torch", torch.__version__, "cutlass at", cutlass.__file__)
if torch.cuda.is_available():
    print("GPU", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability())
EOF
    ;;
  *) echo "usage: device_install_flash.sh stage1|stage2|stage3" >&2; exit 2 ;;
esac
