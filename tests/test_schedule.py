import pytest

from pgolf import schedule as S
from pgolf.config import OptimConfig, ScheduleConfig, TrainConfig


def test_lr_scale_fraction():
    assert S.lr_scale(0.0, 0.3) == 1.0
    assert S.lr_scale(0.7, 0.3) == 1.0
    assert S.lr_scale(0.85, 0.3) == pytest.approx(0.5)
    assert S.lr_scale(1.0, 0.3) == 0.0
    assert S.lr_scale(0.99, 0.3, min_scale=0.1) == 0.1
    assert S.lr_scale(0.5, 0.0) == 1.0


def test_progress_takes_the_tighter_limit():
    t = TrainConfig(max_seconds=100, iterations=1000)
    assert S.progress(100, 50.0, t) == pytest.approx(0.5)
    assert S.progress(800, 50.0, t) == pytest.approx(0.8)
    assert S.progress(10, 500.0, t) == 1.0
    assert S.progress(250, 1e9, TrainConfig(max_seconds=0, iterations=1000)) == pytest.approx(0.25)


def test_same_fraction_behaves_the_same_at_any_budget():
    sched = ScheduleConfig(warmdown_frac=0.4)
    for budget, ms in ((600, 60), (240, 120)):
        t = TrainConfig(max_seconds=budget, iterations=10**6)
        steps = int(budget * 1000 / ms)
        first = next(s for s in range(steps) if S.lr_multiplier(s, s * ms / 1000, sched, t) < 1.0)
        assert first / steps == pytest.approx(0.6, abs=2 / steps)


def test_baseline_iteration_warmdown():
    t = TrainConfig(max_seconds=600, iterations=20000)
    # 100 ms/step: 1200 warm-down steps = the last 120 s
    assert S.lr_scale_iters(4000, 400.0, 1200, t) == 1.0
    assert S.lr_scale_iters(5400, 540.0, 1200, t) == pytest.approx(0.5)
    no_clock = TrainConfig(max_seconds=0, iterations=2000)
    assert S.lr_scale_iters(1400, 0, 1200, no_clock) == pytest.approx(0.5)


def test_momentum_warmup():
    c = OptimConfig(muon_momentum=0.99, muon_momentum_start=0.92, muon_momentum_warmup_steps=100)
    assert S.muon_momentum(0, 0.0, c) == pytest.approx(0.92)
    assert S.muon_momentum(50, 0.0, c) == pytest.approx(0.955)
    assert S.muon_momentum(500, 0.0, c) == pytest.approx(0.99)
    f = OptimConfig(muon_momentum=0.99, muon_momentum_start=0.92, muon_momentum_warmup_frac=0.2)
    assert S.muon_momentum(0, 0.1, f) == pytest.approx(0.955)


def test_qat_and_swa_gates():
    s = ScheduleConfig(qat_start_frac=0.85, swa_every=50, swa_start_scale=0.5)
    assert not S.qat_active(0.84, s) and S.qat_active(0.85, s)
    assert S.swa_take(100, 0.4, s) and not S.swa_take(101, 0.4, s) and not S.swa_take(100, 0.6, s)
    assert not S.qat_active(0.99, ScheduleConfig())
