"""``pgolf bench`` on the CPU: the run built as ``pgolf train`` builds it, timed and profiled per phase."""

import json

import pytest

from pgolf.cli import main


def test_bench_reports_every_phase_of_a_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "b.json"
    assert main(["bench", "--recipe", "smoke", "--steps", "2", "--profile-steps", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["recipe"] == "smoke" and r["device"] == "cpu" and r["world_size"] == 1
    assert r["ms_per_step"] > 0
    assert r["tokens_per_s"] == pytest.approx(r["batch_tokens"] / (r["ms_per_step"] / 1e3), rel=1e-9)
    assert r["peak_mem_mib"] is None  # GPU memory only
    for phase in ("data", "forward", "backward", "optimizer", "muon", "adam"):
        assert phase in r["phases"], phase
    assert r["phases"]["forward"]["host_ms"] > 0 and r["phases"]["muon"]["host_ms"] > 0


def test_gpu_share_splits_the_share_over_the_processes(monkeypatch):
    """``--gpu-share N`` trains on 1/N of the global batch with no accumulation, split over torchrun's processes:
    two processes at 4 hold 1/8 each, as one process at 8 (the 2 vs 1 rank comparison of issue 11). It once set
    the micro-batch to the whole share, which two processes refused."""
    from pgolf.cli import build_parser, resolve_config
    from pgolf.config import ConfigError

    def cfg(world, share):
        monkeypatch.setenv("WORLD_SIZE", str(world))
        return resolve_config(build_parser().parse_args(["train", "--recipe", "best-v1", "--gpu-share", str(share)]))

    one, two = cfg(1, 8), cfg(2, 4)
    assert (one.train.batch_tokens, one.train.micro_batch_tokens) == (65_536, 65_536)
    assert (two.train.batch_tokens, two.train.micro_batch_tokens) == (131_072, 65_536)
    assert two.validate().train.grad_accum(2) == 1
    with pytest.raises(ConfigError, match="on each of 3 process"):
        cfg(3, 4)
