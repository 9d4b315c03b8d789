"""The trust issue (10): each defect found in review, as a test that failed before its fix.

Numbers refer to the issue's items. Heavier multi-process cases run the CLI under torchrun with gloo on CPU.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, SHARED, run_cli, tiny_overrides
from pgolf.data import read_shard, write_shard

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def sets(**over) -> list[str]:
    return [a for o in tiny_overrides(**over) for a in ("--set", o)]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def losses(run: Path) -> list[float]:
    from pgolf.rundir import read_metrics

    return [m["loss"] for m in read_metrics(run) if m["kind"] == "train"]


# ---------------------------------------------------------------------------------------------------------------
# 1. the packed file runs where pgolf is not installed


def _site_without_pgolf(tmp_path: Path) -> Path:
    """A folder that mirrors this interpreter's site-packages (torch, numpy, ...) without pgolf, its editable
    finder or any .pth file: with ``python -S`` and PYTHONPATH set to it, ``import pgolf`` fails."""
    import site

    out = tmp_path / "site"
    out.mkdir()
    for d in map(Path, site.getsitepackages()):
        if not d.is_dir():
            continue
        for entry in d.iterdir():
            n = entry.name
            if n.startswith(("pgolf", "__editable__", "_pgolf")) or n.endswith(".pth") or (out / n).exists():
                continue
            (out / n).symlink_to(entry)
    return out


def test_packed_file_runs_where_pgolf_cannot_be_imported(tmp_path, embedded_dir):
    """The way a reviewer runs a records folder: the packed file alone, no pgolf importable. It trains and scores
    exactly as pgolf train does (same threads), and writes itself into its run directory unchanged."""
    script = tmp_path / "train_gpt.py"
    r = run_cli(["-m", "pgolf", "pack", "--recipe", "smoke", *sets(), "-o", str(script)])
    assert r.returncode == 0, r.stderr
    alone = tmp_path / "alone"
    alone.mkdir()
    env = {**os.environ, "PYTHONPATH": str(_site_without_pgolf(tmp_path)), "OMP_NUM_THREADS": "1",
           "PGOLF_CACHE": os.environ["PGOLF_CACHE"]}
    no_pgolf = subprocess.run([sys.executable, "-S", "-c", "import pgolf"], cwd=alone, env=env, capture_output=True,
                              text=True)
    assert no_pgolf.returncode != 0 and "No module named 'pgolf'" in no_pgolf.stderr
    packed = subprocess.run([sys.executable, "-S", str(script), "--out", str(tmp_path), "--name", "packed"],
                            cwd=alone, env=env, capture_output=True, text=True, timeout=600)
    assert packed.returncode == 0, packed.stderr[-3000:]
    ref = run_cli(["-m", "pgolf", "train", "--recipe", "smoke", *sets(), "--out", str(tmp_path), "--name", "ref"],
                  env=ONE_THREAD)
    assert ref.returncode == 0, ref.stderr[-3000:]
    sp, sr = summary(tmp_path / "packed"), summary(tmp_path / "ref")
    assert losses(tmp_path / "packed") == losses(tmp_path / "ref")
    assert sp["val_bpb"] == sr["val_bpb"] and sp["bytes_model"] == sr["bytes_model"]
    assert (tmp_path / "packed" / "train_gpt.py").read_bytes() == script.read_bytes()
    assert sp["bytes_code"] == sr["bytes_code"] == script.stat().st_size


def test_packed_finder_refuses_pgolf_modules_it_does_not_hold(tmp_path):
    """An installed pgolf never fills a gap in the packed file: a pgolf module it lacks is an ImportError."""
    script = tmp_path / "train_gpt.py"
    assert run_cli(["-m", "pgolf", "pack", "--recipe", "smoke", "-o", str(script)]).returncode == 0
    probe = ("import runpy, sys; g = runpy.run_path(sys.argv[1], run_name='not_main'); "
             "import pgolf.train, pgolf.checkpoint\n"
             "try:\n    import pgolf.submission\nexcept ModuleNotFoundError as e:\n    print('refused:', e)\n"
             "print('served from', pgolf.train.__spec__.loader.__class__.__name__)")
    r = run_cli(["-c", probe, str(script)])  # pgolf is importable here (PYTHONPATH): the file must not use it
    assert r.returncode == 0, r.stderr
    assert "refused: pgolf.submission is not packed into this file" in r.stdout
    assert "served from _PgolfSource" in r.stdout


def test_packed_modules_are_the_import_closure():
    from pgolf.pack import NOT_PACKED, packed_modules

    mods = set(packed_modules())
    assert {"train", "checkpoint", "clock", "files", "predict", "evaluate", "data", "cli"} <= mods
    assert not mods & {"tools", "submission", "datasets", "sample", "plots", "keys"}
    assert set(NOT_PACKED) == {"tools", "sample", "plots"}  # what cli, pgolf.load and the run's plot reach


# ---------------------------------------------------------------------------------------------------------------
# 2. the run keeps the file that trained it; submit ships that file


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory, embedded_dir):
    out = tmp_path_factory.mktemp("submit")
    for seed in (1, 2):
        r = run_cli(["-m", "pgolf", "train", "--recipe", "smoke", *sets(eval__ttt="false", eval__max_tokens=0),
                     "--seed", str(seed), "--out", str(out), "--name", f"s{seed}"])
        assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_run_directory_holds_the_packed_file_it_trained_with(two_seeds):
    from pgolf.files import sha256_file

    for seed in (1, 2):
        run = two_seeds / f"s{seed}"
        s = summary(run)
        assert s["code_sha256"] == sha256_file(run / "train_gpt.py")
        assert s["bytes_code"] == (run / "train_gpt.py").stat().st_size
    # the seed is a run argument, not code: both seeds trained the very same file
    assert (two_seeds / "s1" / "train_gpt.py").read_bytes() == (two_seeds / "s2" / "train_gpt.py").read_bytes()


def test_submit_ships_the_file_the_runs_trained_with(two_seeds, tmp_path, monkeypatch):
    """Even when the working tree has moved on since (here: pack would produce something else)."""
    import pgolf.pack
    from pgolf.cli import main

    monkeypatch.setattr(pgolf.pack, "build_script", lambda *a, **k: "# not what trained\n")
    assert main(["submit", str(two_seeds), "--name", "x", "--author", "a", "--github-id", "g",
                 "--out", str(tmp_path)]) == 0
    (folder,) = list(tmp_path.iterdir())
    assert (folder / "train_gpt.py").read_bytes() == (two_seeds / "s1" / "train_gpt.py").read_bytes()


def test_submit_refuses_runs_trained_by_different_files(two_seeds, tmp_path, capsys):
    import shutil

    from pgolf.cli import main
    from pgolf.files import sha256_file

    runs = tmp_path / "runs"
    shutil.copytree(two_seeds, runs)
    (runs / "s2" / "train_gpt.py").write_text((runs / "s2" / "train_gpt.py").read_text() + "# edited\n")
    out = tmp_path / "out"
    args = ["submit", str(runs), "--name", "x", "--author", "a", "--github-id", "g", "--out", str(out)]
    assert main(args) == 2
    assert "changed after the run" in capsys.readouterr().err
    s = summary(runs / "s2")  # a run that really trained another file (its summary agrees with it)
    s["code_sha256"] = sha256_file(runs / "s2" / "train_gpt.py")
    (runs / "s2" / "summary.json").write_text(json.dumps(s))
    assert main(args) == 2
    assert "did not train the same code" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------
# 3. QAT on the export's grid, at the width the export is predicted to use (the forward's exactness is in
#    test_techniques.py::test_qat_forward_is_the_exported_model)


def test_qat_trains_on_the_fitted_policy(tmp_path, embedded_dir):
    """A budget the recipe's policy does not fit: QAT trains at the widths the fit ladder is predicted to reach."""
    from pgolf.pack import code_bytes
    from conftest import tiny_config

    budget = code_bytes(tiny_config()) + 100_000
    r = run_cli(["-m", "pgolf", "train", "--recipe", "smoke", "--out", str(tmp_path), "--name", "q",
                 *sets(eval__ttt="false", eval__sliding_stride=0, schedule__qat_start_frac=0.5,
                       quant__budget_bytes=budget, quant__fit_budget="true", quant__compressor="lzma")])
    assert r.returncode == 0, r.stderr[-2000:]
    s = summary(tmp_path / "q")
    assert s["qat_policy"] == s["quant_predicted"] and s["qat_policy"]["mlp"] != "int8"
    assert s["qat_from_step"] == 6 and "qat: fake quantization on from step 6" in r.stdout


# ---------------------------------------------------------------------------------------------------------------
# 4. one clock for every rank

SKEW = '''
import json, os, sys, time
rank = int(os.environ["RANK"])
if rank == 1:  # this rank's clock runs 3x fast
    _real = time.perf_counter
    _t0 = _real()
    time.perf_counter = lambda: _t0 + 3.0 * (_real() - _t0)
sys.path.insert(0, {repo!r})
import pgolf.schedule as S
seen = []
for fn in ("lr_multiplier", "muon_momentum", "qat_active"):
    def spy(*a, _f=getattr(S, fn), _n=fn):
        v = _f(*a)
        seen.append((_n, v))
        return v
    setattr(S, fn, spy)
from pgolf.cli import main
rc = main(sys.argv[1:])
json.dump(seen, open(os.path.join({out!r}, f"rank{{rank}}.json"), "w"))
sys.exit(rc)
'''


def test_every_rank_makes_the_same_schedule_decisions_with_skewed_clocks(tmp_path, embedded_dir):
    """Rank 1's clock runs 3x fast. LR, momentum, QAT and the stop are decided from one agreed value, so both
    ranks take the same decisions at the same steps (each rank used to read its own clock)."""
    script = tmp_path / "skew.py"
    script.write_text(SKEW.format(repo=str(REPO), out=str(tmp_path)))
    over = sets(eval__ttt="false", eval__sliding_stride=0, train__iterations=100000, train__max_seconds=6,
                schedule__warmdown_frac=0.6, schedule__qat_start_frac=0.5, optim__muon_momentum_warmup_frac=0.5,
                optim__muon_momentum_warmup_steps=0)
    r = run_cli([*TORCHRUN, str(script), "train", "--recipe", "smoke", *over, "--out", str(tmp_path), "--name", "skew"],
                env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-3000:]
    a = json.loads((tmp_path / "rank0.json").read_text())
    b = json.loads((tmp_path / "rank1.json").read_text())
    lrs = [v for n, v in a if n == "lr_multiplier"]
    assert len(lrs) > 10 and min(lrs) < 0.9 and any(v for n, v in a if n == "qat_active")
    assert a == b
    s = summary(tmp_path / "skew")
    assert s["train_time_s"] < 6.5  # stopped before the step that would pass the budget (jitter aside)
    assert s["steps"] == len(lrs)


# ---------------------------------------------------------------------------------------------------------------
# 5. models with parameters DDP used to refuse; a one-layer artifact reads back


@pytest.mark.parametrize("over", [dict(model__num_layers=1), dict(model__unet_skips="false")])
def test_layerless_skips_train_under_ddp_and_round_trip(tmp_path, embedded_dir, over):
    r = run_cli([*TORCHRUN, "-m", "pgolf", "train", "--recipe", "smoke", *sets(eval__ttt="false", **over),
                 "--out", str(tmp_path), "--name", "r"], env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-3000:]
    s = summary(tmp_path / "r")
    assert s["world_size"] == 2 and s["steps"] == 12
    again = run_cli(["-m", "pgolf", "eval", str(tmp_path / "r" / "model.pgz")], env=ONE_THREAD)
    assert again.returncode == 0, again.stderr
    # one process scores the artifact exactly as the two did (printed to 8 decimals)
    assert again.stdout.split("plain:")[1].split("val_bpb:")[1].split()[0] == f"{s['roundtrip']['plain']['val_bpb']:.8f}"


# ---------------------------------------------------------------------------------------------------------------
# 6. an error on one rank ends every rank within seconds

FAIL = '''
import os, sys
sys.path.insert(0, {repo!r})
import pgolf.data as D
calls = [0]
_next = D.DistributedTokenLoader.next_batch
def next_batch(self, *a):
    calls[0] += 1
    if int(os.environ["RANK"]) == 1 and calls[0] == 1 + 3:  # one warm-up step, then step 3
        raise RuntimeError("injected failure on rank 1 at step 3")
    return _next(self, *a)
D.DistributedTokenLoader.next_batch = next_batch
from pgolf.cli import entry
entry(sys.argv[1:])
'''


def test_an_error_on_one_rank_ends_every_rank_within_seconds(tmp_path, embedded_dir):
    script = tmp_path / "fail.py"
    script.write_text(FAIL.format(repo=str(REPO)))
    t0 = time.perf_counter()
    r = run_cli([*TORCHRUN, str(script), "train", "--recipe", "smoke", *sets(eval__ttt="false"),
                 "--set", "train.iterations=100000", "--out", str(tmp_path), "--name", "f"], env=ONE_THREAD,
                timeout=300)
    took = time.perf_counter() - t0
    assert r.returncode != 0
    assert (r.stdout + r.stderr).count("RuntimeError: injected failure on rank 1 at step 3") == 1  # printed once
    assert took < 60, took  # the start-up is most of it; it used to wait for the collective timeout


# ---------------------------------------------------------------------------------------------------------------
# 7. a tokenizer that is not the shards' is refused


def _sp(v: int) -> Path:
    p = SHARED / "tokenizers" / f"fineweb_{v}_bpe.model"
    if not p.exists():
        pytest.skip(f"{p} not present")
    return p


def test_a_tokenizer_other_than_the_shards_is_refused(tmp_path, embedded_dir):
    """The embedded corpus has its own 1024-piece tokenizer; the challenge's sp1024 has the same vocabulary size
    and would score the shards (wrongly): it used to train and score. Its manifest's fingerprint refuses it, and
    without a manifest the decode/re-encode round trip does."""
    r = run_cli(["-m", "pgolf", "train", "--recipe", "smoke", "--tokenizer", str(_sp(1024)), *sets(),
                 "--out", str(tmp_path), "--name", "t"])
    assert r.returncode == 2 and "not the tokenizer the shards" in r.stderr, r.stderr[-2000:]
    d = _data_copy(tmp_path, embedded_dir)
    line = _refused(["train", "--recipe", "smoke", "--data", str(d), "--tokenizer", str(_sp(1024)), *sets()],
                    "does not reproduce the validation tokens", tmp_path)
    assert "1 of 64 documents" in line


def test_the_manifest_fingerprint_decides_for_our_builds(tmp_path, embedded_dir):
    """A build's manifest records its tokenizer's sha256: a different tokenizer file, even one that round-trips,
    is refused; the right one is accepted, and the run records the fingerprint."""
    import shutil

    from pgolf.files import sha256_file

    data = tmp_path / "d"
    shutil.copytree(embedded_dir, data)
    other = tmp_path / "other.model"
    other.write_bytes((data / "embedded.model").read_bytes())  # same pieces: a copy under another name
    m = json.loads((data / "manifest.json").read_text())
    m["tokenizer_sha256"] = "0" * 64  # as if the shards were built with another tokenizer
    (data / "manifest.json").write_text(json.dumps(m))
    r = run_cli(["-m", "pgolf", "train", "--recipe", "smoke", "--data", str(data), "--tokenizer", str(other),
                 *sets(), "--out", str(tmp_path), "--name", "a"])
    assert r.returncode == 2 and "not the tokenizer the shards" in r.stderr, r.stderr[-1000:]
    m["tokenizer_sha256"] = sha256_file(other)
    (data / "manifest.json").write_text(json.dumps(m))
    r = run_cli(["-m", "pgolf", "train", "--recipe", "smoke", "--data", str(data), "--tokenizer", str(other),
                 *sets(eval__ttt="false"), "--out", str(tmp_path), "--name", "b"])
    assert r.returncode == 0, r.stderr[-2000:]
    s = summary(tmp_path / "b")
    assert s["tokenizer_sha256"] == sha256_file(other) and any("fingerprint matches" in c for c in s["data_checks"])
    # pgolf eval with a tokenizer other than the artifact's is refused too
    e = run_cli(["-m", "pgolf", "eval", str(tmp_path / "b" / "model.pgz"), "--data", str(data), "--tokenizer",
                 str(_sp(1024))])
    assert e.returncode == 2 and "not the tokenizer" in e.stderr


def test_challenge_download_layout_checks_the_tokenizer_it_came_with(tmp_path, embedded_dir):
    """data/manifest.json of the challenge's download names the tokenizer of each variant."""
    import shutil

    root = tmp_path / "data"
    ds = root / "datasets" / "fineweb10B_sp1024"
    ds.mkdir(parents=True)
    for f in embedded_dir.glob("fineweb_*.bin"):
        shutil.copy(f, ds / f.name)
    (root / "tokenizers").mkdir()
    shutil.copy(_sp(1024), root / "tokenizers" / "fineweb_1024_bpe.model")
    (root / "manifest.json").write_text(json.dumps({
        "tokenizers": [{"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model"}],
        "datasets": [{"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024"}]}))
    r = run_cli(["-m", "pgolf", "train", "--recipe", "smoke", "--data", str(ds), "--tokenizer",
                 str(embedded_dir / "embedded.model"), *sets(), "--out", str(tmp_path), "--name", "a"])
    assert r.returncode == 2 and "not the tokenizer the shards" in r.stderr and "manifest.json" in r.stderr


# ---------------------------------------------------------------------------------------------------------------
# 8. input that failed late or never: one clear line, exit 2, before the clock


def _data_copy(tmp_path, embedded_dir) -> Path:
    import shutil

    d = tmp_path / "data"
    shutil.copytree(embedded_dir, d)
    (d / "manifest.json").unlink()
    return d


def _refused(args, needle, tmp_path, timeout=120):
    r = run_cli(["-m", "pgolf", *args, *(["--out", str(tmp_path / "runs")] if "--out" not in args else [])],
                timeout=timeout)
    assert r.returncode == 2, (r.returncode, r.stdout[-1500:], r.stderr[-1500:])
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and needle in err[0], r.stderr
    assert "step:" not in r.stdout  # nothing trained
    return err[0]


def test_an_empty_train_shard_is_refused(tmp_path, embedded_dir):
    d = _data_copy(tmp_path, embedded_dir)
    write_shard(d / "fineweb_train_000000.bin", [])
    _refused(["train", "--recipe", "smoke", "--data", str(d), *sets()], "fineweb_train_000000.bin: holds 0 tokens",
             tmp_path)


def test_a_train_token_beyond_the_vocabulary_is_refused_before_training(tmp_path, embedded_dir):
    d = _data_copy(tmp_path, embedded_dir)
    t = read_shard(d / "fineweb_train_000000.bin").copy()
    t[len(t) // 2] = 5000
    write_shard(d / "fineweb_train_000000.bin", t)
    line = _refused(["train", "--recipe", "smoke", "--data", str(d), *sets()], "token id 5000 >= vocab size 1024",
                    tmp_path)
    assert "fineweb_train_000000.bin" in line


@pytest.mark.parametrize("args,needle", [
    (["--set", "train.batch_tokens=0"], "train.batch_tokens=0: must be >= 1"),
    (["--set", "train.micro_batch_tokens=0"], "train.micro_batch_tokens=0: must be >= 1"),
    (["--set", "model.num_heads=0"], "model.num_heads=0: must be >= 1"),
    (["--gpu-share", "0"], "--gpu-share 0: must be >= 1"),
    (["--recipe", "nope"], "unknown recipe 'nope'"),
    (["--set", "eval.ttt_chunk=512", "--set", "eval.ttt_seq_len=128"], "eval.ttt_chunk=512 > eval.ttt_seq_len=128"),
])
def test_bad_settings_are_one_line_and_exit_2(tmp_path, args, needle):
    full = ["train", *(["--recipe", "smoke"] if "--recipe" not in args else []), *args]
    _refused(full, needle, tmp_path)


def test_validation_without_text_is_refused(tmp_path, embedded_dir):
    """Documents with empty text: a build refuses them; shards holding only BOS tokens are refused at train."""
    from pgolf.datasets import build_shards
    from pgolf.config import InputError

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["", "", "hello world"]))
    with pytest.raises(InputError, match="every val document is empty"):
        build_shards(docs, embedded_dir / "embedded.model", tmp_path / "b", val_docs=2, workers=1, progress=False)
    d = _data_copy(tmp_path, embedded_dir)
    write_shard(d / "fineweb_val_000000.bin", [1] * 500)
    _refused(["train", "--recipe", "smoke", "--data", str(d), *sets()], "hold no text bytes", tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# 9. one run per directory; Ctrl-C and SIGTERM leave a marker


def test_two_runs_with_one_name_do_not_share_the_directory(tmp_path, embedded_dir):
    cmd = [sys.executable, "-m", "pgolf", "train", "--recipe", "smoke", *sets(eval__ttt="false"),
           "--out", str(tmp_path), "--name", "same"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    loser = outs[[p.returncode for p in procs].index(2)]
    assert "in use by another run" in loser[1] or "already exists" in loser[1]
    log = (tmp_path / "same" / "train.log").read_text()
    assert log.count("step:12/12") == 1 and log.count("final (") == 1  # one run's log, not two interleaved


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_run_with_a_marker_and_no_traceback(tmp_path, embedded_dir, sig):
    cmd = [sys.executable, "-m", "pgolf", "train", "--recipe", "smoke",
           *sets(train__iterations=100000, train__segment_steps=100000), "--out", str(tmp_path), "--name", "s"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "s" / "train.log"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.exists() and "step:20/" in log.read_text()):
        time.sleep(0.2)
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 4, (out[-1000:], err[-2000:])
    assert "Traceback" not in err and "interrupted after" in err
    s = summary(tmp_path / "s")
    assert s["status"] == "interrupted" and s["steps"] >= 20 and s["checkpoint"]
    # the checkpoint written on the way out resumes
    r = run_cli(["-m", "pgolf", "train", "--resume", str(tmp_path / "s"), "--set", "train.iterations=" +
                 str(s["steps"] + 3), "--set", "train.segment_steps=0", "--set", "eval.ttt=false"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert summary(tmp_path / "s")["status"] == "complete"


# ---------------------------------------------------------------------------------------------------------------
# 10. RoPE: the base the model trained with, for every window


def test_rope_ref_len_zero_means_the_training_length():
    from pgolf.config import ModelConfig
    from pgolf.model import GPT

    cfg = ModelConfig(vocab_size=64, num_layers=1, model_dim=32, num_heads=2, num_kv_heads=1, ntk_rope=True,
                      rope_ref_len=0, train_seq_len=16)
    m = GPT(cfg)
    seen = {}
    orig = __import__("pgolf.model", fromlist=["rotary_cos_sin"]).rotary_cos_sin

    def spy(T, dims, base, device, ref, trained):
        seen[T] = (ref, trained)
        return orig(T, dims, base, device, ref, trained)

    import pgolf.model as M

    M.rotary_cos_sin = spy
    try:
        m.logits(torch.zeros(1, 32, dtype=torch.long))
    finally:
        M.rotary_cos_sin = orig
    assert seen[32] == (16, 16)  # NTK on: ref = the training length, and a longer window scales the base
    c32, _ = orig(32, 16, 10000.0, "cpu", 16, 16)
    c32_plain, _ = orig(32, 16, 10000.0, "cpu")
    assert not torch.equal(c32, c32_plain)


def test_short_windows_use_the_trained_rope_base():
    """A model trained at 2048 with NTK from 1024 scales its base by 2; a TTT window of 1024 must use that base
    too (it used the unscaled one), i.e. the short table is the long table's prefix."""
    from pgolf.model import rotary_cos_sin

    long_c, long_s = rotary_cos_sin(64, 16, 10000.0, "cpu", ntk_ref_len=32, trained_len=64)
    short_c, short_s = rotary_cos_sin(32, 16, 10000.0, "cpu", ntk_ref_len=32, trained_len=64)
    assert torch.equal(short_c, long_c[:32]) and torch.equal(short_s, long_s[:32])


# ---------------------------------------------------------------------------------------------------------------
# 11. a hub server that never answers


def test_fetch_from_a_server_that_never_answers_fails_in_seconds(tmp_path):
    import socket

    from pgolf import datasets

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held = []
    threading.Thread(target=lambda: [held.append(srv.accept()) for _ in range(100)], daemon=True).start()
    result = {}

    def go():
        try:
            datasets.fetch_fineweb("sp1024", 1, tmp_path / "data", repo_id="a/b",
                                   endpoint=f"http://127.0.0.1:{srv.getsockname()[1]}", cache_dir=tmp_path / "c",
                                   timeout=1.0, attempts=2)
        except Exception as e:  # noqa: BLE001
            result["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive(), "still waiting on a server that never answers"
    assert isinstance(result.get("error"), datasets.DownloadError) and "no answer after 2 attempts" in str(
        result["error"])
    srv.close()


def test_the_ttt_window_defaults_to_the_models_own_context():
    """eval.ttt_seq_len 0 (the default) is train.seq_len: on the proxy a 2048-token model adapted over 1,024-token
    windows scored 1.2368, worse than its sliding eval (1.2338), and 1.2302 over its own 2048 (BENCHMARKS session 7)."""
    from pgolf.config import apply_overrides
    from pgolf.evaluate import ttt_kwargs
    from pgolf.recipes import get_recipe

    cfg = get_recipe("best-sp8192")
    assert cfg.eval.ttt_seq_len == 0 and ttt_kwargs(cfg)["seq_len"] == cfg.train.seq_len == 3072
    assert ttt_kwargs(apply_overrides(cfg, ["eval.ttt_seq_len=1024"]))["seq_len"] == 1024
