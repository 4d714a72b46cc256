"""On a CUDA machine: images in pinned memory upload without staging and give the same network input.

    python bench/pinned_check.py      # prints "pinned upload: ok ..." or raises

The inference process copies each image out of shared memory into pinned memory
(:func:`da3_ros.inference.worker_process.image_copier`); :func:`preprocess_frames` must find those
(:func:`pinned_tensor`) and produce exactly what the staging path produces for the same images.
Run first in a GPU call, before anything is timed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when run as a file


def main() -> int:
    """Compare the two upload paths on 8 views plus one of another size; 0 when equal."""
    import numpy as np
    import torch

    from da3_ros.core.resampling import pinned_image, pinned_tensor, preprocess_frames, process_size

    assert torch.cuda.is_available(), "needs CUDA"
    rng = np.random.default_rng(0)
    plain = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(8)]
    plain.append(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    pinned = []
    for img in plain:
        out = pinned_image(img.shape)
        np.copyto(out, img)
        pinned.append(out)
    assert all(pinned_tensor(p) is not None for p in pinned), "pinned images not recognised"
    assert all(pinned_tensor(p) is None for p in plain), "plain images taken for pinned"
    assert pinned_tensor(pinned[0][1:]) is None, "a view taken for the whole pinned image"
    size = process_size(640, 480, 504)[1]
    x_pin, up_pin = preprocess_frames(pinned, 504, size, "cuda")
    x_ref, up_ref = preprocess_frames(plain, 504, size, "cuda")
    torch.cuda.synchronize()
    assert torch.equal(x_pin, x_ref), "network inputs differ"
    assert all(torch.equal(a, b) for a, b in zip(up_pin, up_ref)), "uploaded images differ"
    print(f"pinned upload: ok ({len(pinned)} views, input {tuple(x_pin.shape)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
