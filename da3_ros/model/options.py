"""The network's named choices, torch-free, so the node's parameter table can read them cheaply.

Each tuple is the one definition of its choice list: :mod:`da3_ros.model.attention`,
:mod:`da3_ros.model.refview` and :mod:`da3_ros.model.accel` validate against it, and the ROS
parameters, the tools and the docs list it from here.
"""

from __future__ import annotations

#: Attention kernels (see :mod:`da3_ros.model.attention`); ``auto`` picks the fastest usable one.
ATTENTION_BACKENDS: tuple[str, ...] = ("auto", "flash_attn", "sdpa", "sdpa_cudnn", "sdpa_flash", "manual")

#: Reference-view strategies inside a window (see :mod:`da3_ros.model.refview`).
REF_VIEW_STRATEGIES: tuple[str, ...] = ("first", "middle", "saddle_balanced", "saddle_sim_range")

#: GPU fast paths (see :mod:`da3_ros.model.accel`): eager, ``torch.compile``, compile + CUDA graphs.
ACCELERATE_MODES: tuple[str, ...] = ("off", "compile", "compile_graphs")

#: Inference dtypes by name; ``auto`` is bf16 (else fp16) on CUDA and fp32 on the CPU.
DTYPES: tuple[str, ...] = ("auto", "float32", "float16", "bfloat16")
