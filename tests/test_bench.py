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
