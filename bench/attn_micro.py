"""Global-attention kernel ceiling: each SDPA backend on DA3-large's global shape, bf16.

One sequence of S * 973 tokens (504x378 input), 16 heads, head_dim 64, laid out as our
network lays it out ((B, N, 3, H, D) from one qkv projection, then transposed views), timed
with CUDA events; TFLOP/s = 4 * N^2 * H * D / time. Run on the GPU machine:
    python3 bench/attn_micro.py 128 512
"""

import contextlib
import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

H, D, TOK = 16, 64, 973


def bench(views: int, backend, reps: int = 2) -> dict:
    reps = reps if views <= 128 else 1
    n = views * TOK
    qkv = torch.randn(1, n, 3, H, D, device="cuda", dtype=torch.bfloat16)
    q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
    name = getattr(backend, "name", "torch default")
    try:
        with sdpa_kernel(backend) if backend is not None else contextlib.nullcontext():
            F.scaled_dot_product_attention(q, k, v)
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                F.scaled_dot_product_attention(q, k, v)
            end.record()
            torch.cuda.synchronize()
        ms = start.elapsed_time(end) / reps
        return {"views": views, "backend": name, "ms": ms, "tflops": 4 * n * n * H * D / ms / 1e9}
    except RuntimeError as exc:
        return {"views": views, "backend": name, "error": str(exc).splitlines()[0][:200]}


if __name__ == "__main__":
    rows = []
    for views in [int(v) for v in sys.argv[1:]] or [128]:
        backends = [None, SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION]
        for backend in backends + ([SDPBackend.EFFICIENT_ATTENTION] if views <= 128 else []):
            rows.append(bench(views, backend))
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"torch_default_priority": str(torch._C._get_sdp_priority_order())
                      if hasattr(torch._C, "_get_sdp_priority_order") else "n/a"}))
