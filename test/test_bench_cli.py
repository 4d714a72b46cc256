"""da3-bench: --fit-16gib followed by --levers, on the CPU with da3-tiny (the fit's probe is stubbed)."""

import math

import torch

from bench import network as bench
from bench.levers import sweep


def test_lever_sweep_still_has_the_weights_after_the_16gib_fit(monkeypatch):
    args = bench.parse_args(["--preset", "da3-tiny", "--res", "56x42", "--views", "1", "--no-upstream",
                             "--fit-16gib", "--fit-guess", "2,2", "--levers", "fp32,base",
                             "--lever-views", "1"])
    args.argv = []
    b = bench.Bench(args, torch.device("cpu"))
    probed = []

    def fake_bracket(make_run, guess):  # bracket_16gib needs CUDA; run the probe it would run once
        probed.append(make_run(guess)().depth.shape[1])
        return {"fits": guess}

    monkeypatch.setattr(bench, "bracket_16gib", fake_bracket)
    b.fit_16gib()
    assert probed == [2] and b.report.fits_16gib == {"ours": {"fits": 2}}
    assert b.state is not None and all(v.device.type == "cpu" for v in b.state.values())
    # what main() does next for --levers
    b.ours = b.module = b.upstream = None
    rows = sweep(args.preset, b.state, torch.device("cpu"), [1], b.width, b.height, ["fp32", "base"],
                 math.inf)
    assert [r["variant"] for r in rows] == ["fp32", "base"]
    assert all("error" not in r and r["ms_S1"] > 0 for r in rows), rows
    assert rows[0]["vs_fp32"]["depth"]["max_rel"] < 1e-5  # the fp32 variant is the reference: same weights
