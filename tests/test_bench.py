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


def test_report_warns_when_the_profiled_steps_are_not_the_timed_ones():
    """Session 14's bench read 102.2 ms profiled against 63.1 ms timed (44 ms idle in the profiled window only) and
    printed that breakdown as the step's. The report now says so when the two differ by more than 10%."""
    from pgolf.bench import report

    r = {"recipe": "x", "device": "cpu", "world_size": 1, "attention": "sdpa", "batch_tokens": 98_304,
         "ms_per_step": 63.1, "tokens_per_s": 1.56e6, "tokens_per_s_per_gpu": 1.56e6, "mfu": None,
         "peak_mem_mib": None, "wall_ms": 102.2, "gpu_busy_ms": 58.4, "top_kernels": [],
         "phases": {"forward": {"gpu_ms": 19.4, "host_ms": 0.0}}}
    lines = report(r).splitlines()
    assert lines[3].startswith("  WARNING: the profiled steps took +62% against the timed ones")
    assert lines[4].split() == ["phase", "GPU", "ms", "host", "ms"]
    assert "WARNING" not in report({**r, "wall_ms": 64.2})


def test_kernel_classes_name_what_a_step_is_made_of():
    """The report sums the step's GPU time by kernel class; names as the profiler gives them on an H200."""
    from pgolf.bench import kernel_class, report

    assert kernel_class("nvjet_tst_128x256_64x4_2x1_v_bz_coopB_TNN") == "matmul"
    assert kernel_class("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64") == "matmul"
    assert kernel_class("triton_tem_fused_mm_0") == "matmul"
    assert kernel_class("triton_per_fused__to_copy_add_mul_rms_norm_12") == "fused (triton)"
    assert kernel_class("triton_red_fused__scaled_dot_product_cudnn_attention_backward_3") == "fused (triton)"
    assert kernel_class("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_3_64x64x64") == "attention"
    assert kernel_class("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>") \
        == "copy/fill"
    assert kernel_class("ncclDevKernel_ReduceScatter_Sum_bf16_RING_LL") == "reduce/collective"
    assert kernel_class("void at::native::(anonymous namespace)::multi_tensor_apply_kernel") == "other"
    r = {"recipe": "x", "device": "cpu", "world_size": 1, "attention": "sdpa", "batch_tokens": 98_304,
         "ms_per_step": 63.1, "tokens_per_s": 1.56e6, "tokens_per_s_per_gpu": 1.56e6, "mfu": None,
         "peak_mem_mib": None, "wall_ms": 63.5, "gpu_busy_ms": 58.4, "top_kernels": [], "phases": {},
         "kernel_classes": {"matmul": 18.0, "attention": 18.2}}
    assert "  GPU ms/step by kernel class: matmul 18.00, attention 18.20" in report(r).splitlines()
