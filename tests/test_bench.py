"""``pgolf bench`` on the CPU: the run built as ``pgolf train`` builds it, timed and profiled per phase."""

import json

import pytest

from pgolf.cli import main


# a 2026-03-20 record's log on the proxy as run_record.sh writes it (session 20, H200; lines cut)
RECORD_LOG = """world_size:1 grad_accum_steps:1
train_batch_tokens:98304 train_seq_len:2048 iterations:20000 warmup_steps:20 max_wallclock_seconds:60.000
step:10/20000 train_loss:6.6891 train_time:1190ms step_avg:118.99ms
step:500/20000 train_loss:2.9355 train_time:53391ms step_avg:106.78ms
step:563/20000 val_loss:2.9764 val_bpb:1.7113 train_time:60038ms step_avg:106.64ms
stopping_early: wallclock_cap train_time:60038ms step:563/20000
"""


def test_bench_reports_every_phase_of_a_step(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out, log = tmp_path / "b.json", tmp_path / "r0320.log"
    log.write_text(RECORD_LOG)
    assert main(["bench", "--recipe", "smoke", "--steps", "2", "--profile-steps", "1", "--json", str(out),
                 "--vs-log", str(log)]) == 0
    r = json.loads(out.read_text())
    v = r["vs_record"]  # beside the record's log: its rate and the ratio of this run's per-GPU rate to it
    assert (v["step"], v["step_avg_ms"], v["batch_tokens"], v["world_size"]) == (563, 106.64, 98_304, 1)
    assert v["ratio"] == r["tokens_per_s_per_gpu"] / v["tokens_per_s_per_gpu"]
    assert f"this run {v['ratio']:.2f}x" in capsys.readouterr().out
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


def test_record_rate_reads_a_record_log_and_bad_logs_are_one_line_before_the_build(tmp_path, capsys):
    """Issue 11's acceptance 2 side by side in one command (``bench/vs_record.sh``): the record's tokens/s per GPU
    from its own log, the last step_avg over its batch and processes; a log without them, or none, is exit 2 with
    one line, before anything is built."""
    from pgolf.bench import record_rate
    from pgolf.config import InputError

    v = record_rate(RECORD_LOG)
    assert v["tokens_per_s_per_gpu"] == 98_304 / 0.10664  # 921,830: session 20's record, beside pgolf's 1,624,963
    two = record_rate(RECORD_LOG.replace("world_size:1", "world_size:2"))
    assert two["tokens_per_s_per_gpu"] == v["tokens_per_s_per_gpu"] / 2  # the global batch over two GPUs
    for bad, what in ((RECORD_LOG.replace("train_batch_tokens", "batch"), "train_batch_tokens:N"),
                      ("world_size:1\ntrain_batch_tokens:98304\n", "step_avg")):
        with pytest.raises(InputError, match=what):
            record_rate(bad, "r.log")
        (tmp_path / "r.log").write_text(bad)
        assert main(["bench", "--recipe", "smoke", "--vs-log", str(tmp_path / "r.log")]) == 2
        got = capsys.readouterr()
        err = got.err.strip().splitlines()
        assert len(err) == 1 and str(tmp_path / "r.log") in err[0] and got.out == ""  # nothing built, nothing run
    assert main(["bench", "--recipe", "smoke", "--vs-log", str(tmp_path / "none.log")]) == 2
    assert "none.log" in capsys.readouterr().err


def test_vs_record_script_runs_the_record_then_benches_beside_its_log(tmp_path):
    """bench/vs_record.sh: the record through the shared runner first (its log in $OUT), then `pgolf bench` of the
    record's model at its per-rank batch with --vs-log on that log (stand-ins for the runner and python3 print
    their arguments); a record folder without train_gpt.py is one line and exit 2, before anything runs."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "bench").mkdir()
    for script in ("vs_record.sh", "record_env.sh"):
        shutil.copy(repo / "bench" / script, tmp_path / "bench" / script)
    shared = tmp_path / "shared"
    rec = shared / "bench" / "records" / "2026-03-20_Int6_MLP3x_SmearGate_BigramHash_MuonWD_SWA"
    rec.mkdir(parents=True)
    (rec / "train_gpt.py").write_text("")
    runner = shared / "bench" / "records" / "run_record.sh"
    runner.write_text('#!/usr/bin/env bash\necho "RECORD $* BUDGET=$BUDGET DATA=$DATA"\n'
                      'printf "%s" "$RECORD_LOG" > "$OUT/$2.log"\n')
    (tmp_path / "bin").mkdir()
    python3 = tmp_path / "bin" / "python3"
    python3.write_text('#!/usr/bin/env bash\necho "PY $*"\n')
    for exe in (runner, python3):
        exe.chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", SHARED=str(shared), OUT=str(out),
               RECORD_LOG=RECORD_LOG, DATA="/d")
    r = subprocess.run(["bash", str(tmp_path / "bench" / "vs_record.sh")], env=env, capture_output=True, text=True,
                       timeout=60)
    lines = [x for x in r.stdout.splitlines() if x.startswith(("RECORD", "PY"))]
    assert r.returncode == 0 and lines == [
        f"RECORD {rec}/train_gpt.py rec20260320 BUDGET=60 DATA=/d",
        f"PY -m pgolf bench --recipe pr164-s64 --gpu-share 8 --data /d --tokenizer {shared}/tokenizers/"
        f"fineweb_1024_bpe.model --steps 40 --profile-steps 8 --top 20 --json {out}/bench.json --vs-log "
        f"{out}/rec20260320.log --set train.batch_tokens=786432 --set optim.muon_wd=0.04"], r
    assert (out / "rec20260320.log").read_text() == RECORD_LOG
    r = subprocess.run(["bash", str(tmp_path / "bench" / "vs_record.sh"), str(tmp_path), "best", "--steps", "9"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "RECORD" not in r.stdout and len(r.stderr.strip().splitlines()) == 1, r


def test_ranks_script_compares_one_process_with_two(tmp_path, embedded_dir):
    """bench/ranks.sh (issue 11's acceptance 3), run for real on the CPU with gloo: `speed` benches one process at
    --gpu-share 8 and two at 4 (1/8 each) and prints their per-GPU ratio; `loss` trains one global batch with one
    process and with two, same seed, and prints both losses (on the CPU, where two gloo processes compute the
    one-process run's math bit for bit, with a gap of exactly 0); a mode it does not know is one line and exit 2."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"  # python3 is this interpreter (its venv's bin first on PATH)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", OUT=str(out),
               DATA=str(embedded_dir),
               TOKENIZER=str(Path(embedded_dir) / "embedded.model"), STEPS="6", OMP_NUM_THREADS="1")

    def ranks(*args):
        return subprocess.run(["bash", str(repo / "bench" / "ranks.sh"), *args], env=env, capture_output=True,
                              text=True, timeout=600)

    r = ranks("speed", "smoke")
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith("RANKS speed smoke"))
    one, two = (json.loads((out / f"ranks{n}.json").read_text()) for n in (1, 2))
    assert (one["world_size"], two["world_size"]) == (1, 2) and one["batch_tokens"] * 2 == two["batch_tokens"]
    assert line.endswith(f"{two['tokens_per_s_per_gpu'] / one['tokens_per_s_per_gpu']:.3f}")
    r = ranks("loss", "smoke")
    assert r.returncode == 0, r.stderr[-2000:]
    last = r.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"RANKS loss: mean over the last 6 steps 1 rank (\S+), 2 ranks \1; largest gap 0\.0000", last)
    r = ranks("fast")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "RANKS" not in r.stdout


def test_ttt_speed_script_takes_config_overrides_and_predicts_the_challenge_time(embedded_dir, tmp_path):
    """bench/ttt_speed.py --set reaches TTT's settings (a window of the challenge's context on random weights: how
    session 20 would have timed TTT at 3,072 on an H100 without training a model first), and each path's line
    carries the challenge prediction of its seconds. It times the first --docs documents with all their targets,
    by default every document of the val set, the last one's included (session 22's slicing dropped it)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from pgolf.data import load_tokens, write_shard
    from pgolf.evaluate import find_docs

    repo = Path(__file__).resolve().parents[1]
    toks = load_tokens(sorted(Path(embedded_dir).glob("fineweb_val_*.bin")))
    docs = find_docs(toks, 1)
    four = tmp_path / "four"  # a val set of the first four documents
    four.mkdir()
    write_shard(four / "fineweb_val_000000.bin", toks[:docs[4][0]].numpy().astype("uint16"))

    def speed(data, *args):
        r = subprocess.run([sys.executable, str(repo / "bench" / "ttt_speed.py"), "--recipe", "smoke", "--data",
                            str(data), "--tokenizer", str(Path(embedded_dir) / "embedded.model"), *args,
                            "--paths", "eager", "--device", "cpu", "--set", "eval.ttt_seq_len=48",
                            "--set", "eval.ttt_chunk=16"], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    out = speed(embedded_dir, "--docs", "3")
    assert "'chunk': 16" in out and "'seq_len': 48" in out
    assert f" tokens {docs[2][0] + docs[2][1]:,} " in out.splitlines()[0]  # 3 documents and the 4th's BOS
    line = next(x for x in out.splitlines() if x.startswith("eager: val_bpb"))
    assert "(predicted on the challenge's full val set on 8 GPUs like these: " in line
    assert out.strip().splitlines()[-1].startswith("eager: ") and "a (32, 48) step" in out
    assert f" tokens {docs[4][0]:,} " in speed(four).splitlines()[0]  # all four, to the last token


def test_bench_python_scripts_import_their_own_checkout_where_pgolf_is_not_installed(tmp_path):
    """The device runs bench/*.py from a copy of the repository where pgolf is not installed (session 22's first
    H100 call died on `No module named 'pgolf'`): each script finds the checkout's package itself. Here pgolf is
    made importable only from a sys.path entry naming the repository, as on the device."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    prelude = (
        "import runpy, sys\n"
        f"REPO = {str(repo)!r}\n"
        "class NotInstalled:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'pgolf' and REPO not in sys.path:\n"
        "            raise ModuleNotFoundError(\"No module named 'pgolf'\")\n"
        "sys.meta_path.insert(0, NotInstalled())\n"
        "sys.path[:] = [p for p in sys.path if p not in ('', '.', REPO)]\n"
        "sys.argv = [sys.argv[1], '--help']\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    for script in ("ttt_speed.py", "gptq_speed.py"):
        r = subprocess.run([sys.executable, "-c", prelude, str(repo / "bench" / script)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "usage:" in r.stdout, (script, r.stderr[-1500:])
