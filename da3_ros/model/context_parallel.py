"""Context parallelism: one window's views sharded over the ranks of a process group.

Each rank holds a contiguous block of views ``[start, end)`` (sizes may differ by rank) and runs
everything that is per view on them alone: patch embedding, local blocks, heads, camera
decoder. A global block needs every view, so each rank computes q, k, v for its own tokens,
the k and v of all ranks are gathered (``torch.distributed`` collectives, straight into the
full-sequence buffers) and the local queries attend over the full sequence through the model's attention
function (the kernel is still chosen by :mod:`da3_ros.model.attention`); the outputs stay local.

Why this equals the single-process forward (up to the summation order of fp32 rounding):

- Global attention has no mask and gives every view the same global RoPE positions (token 0
  at (0, 0), every patch at (1, 1), :mod:`da3_ros.model.rope`), so a query's output depends on
  the *set* of keys and values, not on their order. Concatenating the ranks' keys in rank
  order (which is window order here) is therefore exact.
- Upstream moves the reference view first before block ``alt_start`` and moves it back for
  the heads. Since attention is order-free, the only lasting effect of that move is which
  view receives ``camera_token[0]``. Here the reference is chosen from all views' cls tokens
  (a ``(B, S, C)`` all-gather, tiny). Every rank runs the same selection on the same gathered
  tensor, and the rank holding that view gives it the reference token. No view moves.
- The camera encoder (pose conditioning) attends over the S views' pose tokens. It is tiny,
  so every rank runs it on the whole window and keeps its own rows.
- The per-view outputs are all-gathered after the heads, so per-window post-processing (sky
  fill of metric/mono, nested metric alignment) sees every view. Each rank returns the same
  full-window :class:`~da3_ros.model.net.DA3Output`.

Every rank must call the forward with the same window (same S, sizes, strategy and options)
and its own image block; the collectives are then issued in the same order on every rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from da3_ros.model.attention import AttentionFn

# torch 2.13 renamed all_gather_into_tensor (kept, deprecated); the GPU images run torch 2.11.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def split_views(num_views: int, ranks: int) -> tuple[int, ...]:
    """Contiguous view counts per rank, as even as possible, larger shards first.

    ``split_views(5, 2) == (3, 2)``. Raises ValueError when a rank would get no view.
    """
    if ranks < 1 or num_views < ranks:
        raise ValueError(f"cannot shard {num_views} views over {ranks} ranks (each needs a view)")
    base, extra = divmod(num_views, ranks)
    return tuple(base + (r < extra) for r in range(ranks))


class ViewShard:
    """This rank's share of a window and the collectives that join the shares.

    Args:
        counts: views per rank, in rank order (``sum(counts)`` = S; each >= 1).
        rank: this process's rank within ``group``.
        group: the process group (None: the default group); its size must be ``len(counts)``.
    """

    def __init__(self, counts: Sequence[int], rank: int, group: dist.ProcessGroup | None = None) -> None:
        self.counts = tuple(int(c) for c in counts)
        if min(self.counts) < 1:
            raise ValueError(f"every rank needs at least one view, got counts {self.counts}")
        self.rank, self.group = int(rank), group
        self.start = sum(self.counts[:self.rank])
        self.end = self.start + self.counts[self.rank]
        self.num_views = sum(self.counts)

    @property
    def local_views(self) -> int:
        """Views on this rank."""
        return self.counts[self.rank]

    def local(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """This rank's views of a whole-window ``x`` (views along ``dim``)."""
        return x.narrow(dim, self.start, self.local_views)

    def gather_views(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """All ranks' views of ``x``, in window order.

        Equal shards take one all-gather; uneven ones one broadcast per rank (gloo's all-gather
        needs equal sizes, and padding would cost a second full-size copy). Either way each
        rank's views land straight in their place in one new ``(S, ...)`` buffer.

        Args:
            x: ``(..., S_local, ...)`` with this rank's views along ``dim``; the other dims
                must be equal on every rank.
            dim: the view dimension.

        Returns:
            ``(..., S, ...)``, the same on every rank (a view of a view-major buffer: for
            ``dim=1`` and a batch of 1, flattening views and tokens needs no copy).
        """
        if len(self.counts) == 1:
            return x
        mine = x.movedim(dim, 0).contiguous()
        full = mine.new_empty((self.num_views,) + mine.shape[1:])
        if len(set(self.counts)) == 1:
            _all_gather_single(full, mine, group=self.group)
        else:
            start = 0
            for rank, count in enumerate(self.counts):
                part = full[start:start + count]
                if rank == self.rank:
                    part.copy_(mine)
                src = rank if self.group is None else dist.get_global_rank(self.group, rank)
                dist.broadcast(part, src=src, group=self.group)
                start += count
        return full.movedim(0, dim)

    def global_attention(self, attn_fn: AttentionFn) -> AttentionFn:
        """``attn_fn`` with this rank's queries over every rank's keys and values.

        The returned function takes local ``q, k, v (B, S_local * N, heads, D)`` (N tokens per
        view, view-major as a global block lays them out) and returns ``(B, S_local * N, heads,
        D)``: k and v are gathered (one collective each, straight into the full-sequence
        buffers), then ``attn_fn(q, k_all, v_all)`` with ``k_all, v_all (B, S * N, heads, D)``.
        """
        def full(t: torch.Tensor) -> torch.Tensor:
            per_view = t.unflatten(1, (self.local_views, t.shape[1] // self.local_views))
            return self.gather_views(per_view).flatten(1, 2)

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return attn_fn(q, full(k), full(v))

        return fn
