"""End-to-end CPU runs: the run directory, the roundtrip, pgolf eval, and 1 vs 2 gloo processes."""
import json
import math
import re

import pytest
import torch

from conftest import run_cli, tiny_config, tiny_overrides
from pgolf.quant import read_artifact
from pgolf.recipes import RECIPES
from pgolf.rundir import read_metrics
from pgolf.train import train


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, embedded_dir):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    summary = train(tiny_config(), out)
    return out, summary


def test_run_directory(tiny_run):
    out, s = tiny_run
    for f in ("config.json", "env.json", "metrics.jsonl", "train.log", "summary.json", "model.pgz"):
        assert (out / f).exists(), f
    assert s["steps"] == 12 and s["embedded_data"]
    assert s["bytes_model"] == (out / "model.pgz").stat().st_size
    assert s["bytes_total"] == s["bytes_model"] + s["bytes_code"] and not s["over_budget"]
    assert set(s["roundtrip"]) == {"plain", "sliding", "ttt"}
    # every eval mode scores the same tokens and bytes
    toks = {r["tokens"] for r in s["roundtrip"].values()}
    assert len(toks) == 1 and {r["bytes"] for r in s["roundtrip"].values()} == {s["roundtrip"]["plain"]["bytes"]}
    metrics = read_metrics(out)
    steps = [m["step"] for m in metrics if m["kind"] == "train"]
    assert steps == list(range(1, 13))
    log = (out / "train.log").read_text()
    assert "step:12/12" in log and "roundtrip plain" in log and "embedded corpus" in log
    assert json.loads((out / "config.json").read_text())["model"]["vocab_size"] == 1024


def test_loss_decreases(tiny_run):
    out, s = tiny_run
    losses = [m["loss"] for m in read_metrics(out) if m["kind"] == "train"]
    assert losses[-1] < losses[0] - 0.5


def test_pgolf_eval_reproduces_the_run(tiny_run):
    out, s = tiny_run
    r = run_cli(["-m", "pgolf", "eval", str(out / "model.pgz")])
    assert r.returncode == 0, r.stderr
    got = {line.split(":")[0]: float(line.split("val_bpb:")[1].split()[0]) for line in r.stdout.splitlines()}
    for mode in ("plain", "sliding", "ttt"):
        assert got[mode] == pytest.approx(s["roundtrip"][mode]["val_bpb"], abs=1e-6), mode
    # each mode's line carries the 8-GPU prediction the run's summary holds (from bytes of text: the same here),
    # flagged where it passes the eval budget (this CPU's TTT does)
    lines = {line.split(":")[0]: line for line in r.stdout.splitlines()}
    pred = {m: float(re.search(r"8 GPUs like these: (\d+)s", line)[1]) for m, line in lines.items()}
    assert pred.keys() == got.keys() and all(v > 0 for v in pred.values())
    assert all(("over the 600 s eval budget" in line) == (pred[m] > 600) for m, line in lines.items())


@pytest.mark.parametrize("extra", [{}, dict(optim__grad_clip_norm=0.3, optim__muon_ns="polar_express",
                                             optim__muon_row_norm="true", model__bigram_buckets=64)])
def test_two_gloo_processes_match_one(tmp_path, embedded_dir, extra):
    """The same global batch on 1 process (grad accumulation 2) and 2 processes (each rank orthogonalizes the
    matrices it owns after a reduce-scatter, then all-gathers the updates), one thread each: the same math, so every
    step's loss, the artifact and val_bpb are equal bit for bit -- with gradient clipping over the sharded
    gradients, Polar Express and row normalisation too."""
    over = tiny_overrides(eval__ttt="false", **extra)
    args = ["--recipe", "smoke", "--out", str(tmp_path)] + [a for o in over for a in ("--set", o)]
    one = run_cli(["-m", "pgolf", "train", *args, "--name", "one"], env={"OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr
    two = run_cli(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pgolf", "train",
                   *args, "--name", "two"], env={"OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr + two.stdout
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s1["world_size"] == 1 and s2["world_size"] == 2
    l1 = [m["loss"] for m in read_metrics(tmp_path / "one") if m["kind"] == "train"]
    l2 = [m["loss"] for m in read_metrics(tmp_path / "two") if m["kind"] == "train"]
    assert len(l1) == len(l2) == 12
    assert l1 == l2
    _assert_same_weights(tmp_path / "one" / "model.pgz", tmp_path / "two" / "model.pgz")
    for mode in ("plain", "sliding"):
        for key in ("val_loss", "val_bpb", "tokens", "bytes"):  # the scores; not the (timing) eval seconds
            assert s1["roundtrip"][mode][key] == s2["roundtrip"][mode][key], (mode, key)


def test_bad_data_is_a_clear_error(tmp_path):
    (tmp_path / "fineweb_val_000000.bin").write_bytes(b"garbage" * 200)
    (tmp_path / "fineweb_train_000000.bin").write_bytes(b"garbage" * 200)
    (tmp_path / "t.model").write_bytes(b"x")
    r = run_cli(["-m", "pgolf", "train", "--data", str(tmp_path), "--recipe", "smoke"])
    assert r.returncode == 2 and "error" in r.stderr and "t.model" in r.stderr


def test_unknown_recipe_and_key(tmp_path):
    r = run_cli(["-m", "pgolf", "train", "--recipe", "nope"])
    assert r.returncode == 2 and "unknown recipe" in r.stderr
    r = run_cli(["-m", "pgolf", "train", "--set", "model.layers=3"])
    assert r.returncode == 2 and "unknown config key" in r.stderr


@pytest.mark.parametrize("recipe", sorted(set(RECIPES) - {"smoke"}))
def test_every_recipe_runs_end_to_end_tiny(recipe, tmp_path, embedded_dir):
    """Each recipe's switches (QAT, SWA, clip search, zstd, NTK, ...) through the whole pipeline, shrunk to a toy."""
    from pgolf.config import apply_overrides
    from pgolf.recipes import get_recipe

    c = get_recipe(recipe)
    shrink = ["model.vocab_size=0", "model.num_layers=3", "model.model_dim=64", "model.num_heads=4",
              "model.num_kv_heads=2", "train.seq_len=64", "train.batch_tokens=1024", "train.micro_batch_tokens=512",
              "train.iterations=8", "train.max_seconds=0", "train.warmup_steps=1", "train.val_every=4",
              "eval.max_tokens=4000", "eval.batch_tokens=4096", "eval.ttt_seq_len=64", "eval.ttt_chunk=32",
              "quant.keep_float_max_numel=1024", "data.path=", "model.rope_ref_len=32"]
    if c.model.xsa_last_n:
        shrink.append("model.xsa_last_n=2")
    if c.model.recur_to:
        shrink += ["model.recur_from=1", "model.recur_to=2", "schedule.recur_start_frac=0.5"]
    if c.model.parallel_from >= 0:
        shrink.append("model.parallel_from=2")
    if c.model.ve_dim:
        shrink += ["model.ve_dim=16", "model.ve_layers=1,2"]
    if c.eval.sliding_stride:
        shrink.append("eval.sliding_stride=16")
    if c.schedule.warmdown_iters:
        shrink.append("schedule.warmdown_iters=3")
    if c.schedule.swa_enabled:
        shrink.append("schedule.warmdown_frac=0.6")
    if c.schedule.seq_schedule:  # the recipe's context growth, at the toy's lengths
        shrink.append("schedule.seq_schedule=0:32,0.33:64")
    c = apply_overrides(c, shrink)
    run = tmp_path / recipe
    s = train(c, run)
    assert s["steps"] == 8 and s["val_bpb"] > 0 and s["bytes_model"] > 0 and s["status"] == "complete"
    log = (run / "train.log").read_text()
    metrics = read_metrics(run)
    steps = [m for m in metrics if m["kind"] == "train"]
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert ("context: sequences of 64 tokens from step" in log) == bool(c.schedule.seq_schedule)
    # the recipe's eval: its final mode, every mode scoring every val target once
    assert s["final_mode"] == c.eval.final and set(s["roundtrip"]) >= {"plain", c.eval.final}
    assert {r["tokens"] for r in s["roundtrip"].values()} == {s["val_tokens"] - 1}
    # its schedule: warm-down and momentum warm-up as configured
    if c.schedule.warmdown_frac or c.schedule.warmdown_iters:
        assert steps[-1]["lr_scale"] < 1.0 and steps[0]["lr_scale"] == 1.0
    if c.optim.muon_momentum_warmup_frac or c.optim.muon_momentum_warmup_steps:
        assert steps[0]["momentum"] == pytest.approx(c.optim.muon_momentum_start)
    else:
        assert steps[0]["momentum"] == pytest.approx(c.optim.muon_momentum)
    # its model: the switches are in the artifact
    header, state = read_artifact(run / "model.pgz")
    assert ("bigram.embed.weight" in state) == bool(c.model.bigram_buckets)
    assert ("value_embed.embed.weight" in state) == bool(c.model.ve_dim)
    assert any(k.startswith("smear.") for k in state) == c.model.smear_gate  # v1: smear.smear; v2: smear_w, smear_lam
    assert state["blocks.0.mlp.fc.weight"].shape[0] == c.model.hidden_dim
    # its storage policy: every block matrix in the format the export settled on, compressed as configured
    fmts = {t["name"]: t["fmt"] for t in header["tensors"]}
    assert fmts["blocks.0.mlp.fc.weight"] == s["quant_used"]["mlp"]
    c_q = next(n for n in fmts if n.endswith(".attn.c_q.weight"))  # record-0331's layer 0 has no attention
    assert fmts[c_q] == s["quant_used"]["attn"]
    assert ("blocks.0.attn.c_q.weight" in state) == (0 not in c.model.no_attn_layers)
    from pgolf.quant import COMPRESSORS, read_payload

    assert read_payload(run / "model.pgz")[2] == COMPRESSORS[c.quant.compressor]
    if c.schedule.qat_start_frac:
        first = math.ceil(8 * c.schedule.qat_start_frac)  # the first step whose progress reaches the fraction
        assert s["qat_from_step"] == (first if first < 8 else None)
        assert s["qat_policy"] == s["quant_predicted"]
    if c.schedule.swa_enabled:
        assert "SWA over" in log
    if c.model.recur_to:
        assert "recurrence: layers 1..1 x2 from step 4" in log
    if c.schedule.ema_decay:
        assert "EMA over 8 updates" in log


def test_over_budget_is_flagged_or_fitted(tmp_path, embedded_dir):
    from pgolf.pack import code_bytes

    # under the tiny model's int8 artifact (~120 KB) + code, reachable with fewer bits (int4 everywhere: ~89 KB)
    small = code_bytes(tiny_config()) + 100_000
    r = run_cli(["-m", "pgolf", "train", "--recipe", "smoke", "--out", str(tmp_path), "--name", "over",
                 *[a for o in tiny_overrides(eval__ttt="false", eval__sliding_stride=0,
                                             quant__budget_bytes=small) for a in ("--set", o)]])
    assert r.returncode == 3, r.stderr
    assert "ERROR: artifact over budget" in r.stdout and (tmp_path / "over" / "model.pgz").exists()
    s = json.loads((tmp_path / "over" / "summary.json").read_text())
    assert s["over_budget"] and s["quant_used"]["mlp"] == "int8"
    fit = train(tiny_config(eval__ttt="false", eval__sliding_stride=0, quant__budget_bytes=small,
                            quant__fit_budget="true", quant__compressor="lzma"), tmp_path / "fit")
    assert not fit["over_budget"] and fit["bytes_total"] <= small and fit["quant_used"]["mlp"] != "int8"


def test_a_loop_that_never_started_ships_its_untied_mlps_as_copies(tmp_path, embedded_dir):
    """model.recur_untie_mlp with the recurrence due after the last step: the run is scored looped, as every eval
    scores it, so its untied MLPs leave as copies of their layer's (averaged) MLP, not the zeros they held."""
    s = train(tiny_config(eval__ttt="false", model__recur_from=0, model__recur_to=1, model__recur_loops=2,
                          model__recur_untie_mlp="true", schedule__recur_start_frac=0.99,
                          schedule__ema_decay=0.9), tmp_path / "r")
    assert s["status"] == "complete" and "recurrence:" not in (tmp_path / "r" / "train.log").read_text()
    state = read_artifact(tmp_path / "r" / "model.pgz")[1]
    for k in ("fc", "proj"):
        assert state[f"blocks.0.mlp_repeats.0.{k}.weight"].abs().sum() > 0
        assert torch.equal(state[f"blocks.0.mlp_repeats.0.{k}.weight"], state[f"blocks.0.mlp.{k}.weight"])


def _assert_same_weights(a, b):
    """The two artifacts hold the same tensors (their headers differ in what the runs were told, e.g. the pause)."""
    from pgolf.quant import read_artifact

    sa, sb = read_artifact(a)[1], read_artifact(b)[1]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _train_losses(run):
    return [m["loss"] for m in read_metrics(run) if m["kind"] == "train"]


def test_paused_and_resumed_run_equals_one_straight_run(tmp_path, embedded_dir):
    """Pause at step 5 of 12 (checkpoint), resume in a new process: every step's loss, the SWA average, the QAT
    switch, the depth recurrence started before the pause (its untied MLPs trained, not copied again) and the final
    scores are those of the uninterrupted run."""
    over = tiny_overrides(eval__ttt="false", eval__sliding_stride=0, schedule__swa_every=2,
                          schedule__swa_start_scale=0.95, schedule__warmdown_frac=0.9,
                          schedule__qat_start_frac=0.3, model__recur_from=0, model__recur_to=1,
                          model__recur_loops=2, model__recur_untie_mlp="true", schedule__recur_start_frac=0.2)
    args = ["--recipe", "smoke", "--out", str(tmp_path)] + [a for o in over for a in ("--set", o)]
    straight = run_cli(["-m", "pgolf", "train", *args, "--name", "straight"])
    assert straight.returncode == 0, straight.stderr
    first = run_cli(["-m", "pgolf", "train", *args, "--name", "paused", "--set", "train.segment_steps=5"])
    assert first.returncode == 0, first.stderr
    run = tmp_path / "paused"
    assert "paused: step 5" in first.stdout and (run / "checkpoint" / "meta.json").is_file()
    assert not (run / "summary.json").exists()
    # a second --resume of a finished run, and a resume with other flags, are clear errors
    bad = run_cli(["-m", "pgolf", "train", "--resume", str(run), "--recipe", "smoke"])
    assert bad.returncode == 2 and "--recipe" in bad.stderr
    second = run_cli(["-m", "pgolf", "train", "--resume", str(run), "--set", "train.segment_steps=0"])
    assert second.returncode == 0, second.stderr
    assert "resume: step 5" in second.stdout
    a = json.loads((tmp_path / "straight" / "summary.json").read_text())
    b = json.loads((run / "summary.json").read_text())
    assert a["qat_from_step"] is not None and a["qat_from_step"] == b["qat_from_step"]
    assert "SWA over" in (run / "train.log").read_text()
    assert _train_losses(run) == _train_losses(tmp_path / "straight")  # bit for bit
    assert len(_train_losses(run)) == 12
    assert b["val_bpb"] == a["val_bpb"] and b["steps"] == 12
    _assert_same_weights(run / "model.pgz", tmp_path / "straight" / "model.pgz")
    assert not (run / "checkpoint").exists()  # consumed
    again = run_cli(["-m", "pgolf", "train", "--resume", str(run)])
    assert again.returncode == 2 and "no complete checkpoint" in again.stderr


def test_gptq_reserve_is_timed_in_the_warm_up_and_kept_across_a_resume(tmp_path, embedded_dir):
    """train.reserve_gptq: GPTQ is timed once before the clock and the loop leaves that many times it to the export
    (the summary says how much); a resumed run keeps the reserve its schedule was built on rather than timing again;
    the run's config.json keeps the setting as given; without GPTQ the switch is one line and exit 2."""
    over = tiny_overrides(eval__ttt="false", eval__sliding_stride=0, quant__gptq="true", quant__gptq_batches=2,
                          train__max_seconds=1000, train__reserve_gptq=3, train__reserve_s=0.0)
    args = ["--recipe", "smoke", "--out", str(tmp_path)] + [a for o in over for a in ("--set", o)]
    first = run_cli(["-m", "pgolf", "train", *args, "--name", "paused", "--set", "train.segment_steps=5"])
    assert first.returncode == 0, first.stderr
    left = float(re.search(r"reserve: GPTQ took [\d.]+s in the warm-up; the loop leaves it ([\d.]+)s",
                           first.stdout)[1])
    run = tmp_path / "paused"
    second = run_cli(["-m", "pgolf", "train", "--resume", str(run), "--set", "train.segment_steps=0"])
    assert second.returncode == 0, second.stderr
    assert "resume: step 5" in second.stdout and "reserve: GPTQ took" not in second.stdout
    s = json.loads((run / "summary.json").read_text())
    assert 0 < s["reserve_s"] == pytest.approx(left, abs=0.051) and s["steps"] == 12
    assert json.loads((run / "config.json").read_text())["train"]["reserve_s"] == 0.0  # the setting as given
    bad = run_cli(["-m", "pgolf", "train", *args, "--name", "bad", "--set", "quant.gptq=false"])
    assert bad.returncode == 2 and "train.reserve_gptq" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_pause_and_resume_under_two_gloo_processes(tmp_path, embedded_dir):
    """Each rank keeps the Muon momentum of the matrices it owns: the checkpoint is per rank."""
    over = tiny_overrides(eval__ttt="false", eval__sliding_stride=0)
    args = ["--recipe", "smoke", "--out", str(tmp_path)] + [a for o in over for a in ("--set", o)]
    tr = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pgolf", "train"]
    env = {"OMP_NUM_THREADS": "1"}
    straight = run_cli([*tr, *args, "--name", "straight"], env=env)
    assert straight.returncode == 0, straight.stderr + straight.stdout
    first = run_cli([*tr, *args, "--name", "paused", "--set", "train.segment_steps=6"], env=env)
    assert first.returncode == 0, first.stderr + first.stdout
    run = tmp_path / "paused"
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["meta.json", "rank0.pt", "rank1.pt"]
    one = run_cli(["-m", "pgolf", "train", "--resume", str(run)])
    assert one.returncode == 2 and "resume with the same --nproc_per_node" in one.stderr
    second = run_cli([*tr, "--resume", str(run)], env=env)
    assert second.returncode == 0, second.stderr + second.stdout
    assert _train_losses(run) == pytest.approx(_train_losses(tmp_path / "straight"), abs=1e-6)
    a = json.loads((tmp_path / "straight" / "summary.json").read_text())
    b = json.loads((run / "summary.json").read_text())
    assert b["val_bpb"] == pytest.approx(a["val_bpb"], abs=1e-6) and b["world_size"] == 2


def test_gptq_export_counts_its_calibration_as_training(tmp_path, embedded_dir, monkeypatch):
    """GPTQ calibrates on training tokens after the loop: that time is training time (the rules count it), taken
    from the loop's share of the budget by train.reserve_s; its solve is primed in the warm-up, outside the clock;
    the export then stores GPTQ's codes."""
    import pgolf.train as T
    from pgolf.config import ConfigError, apply_overrides
    from pgolf.quant import prime_gptq

    c = tiny_config(eval__ttt="false", eval__sliding_stride=0, quant__gptq="true", quant__gptq_batches=3,
                    quant__mlp="int5", quant__attn="int5", train__iterations=100000, train__max_seconds=3,
                    train__reserve_s=1, quant__gptq_embed="true", quant__sdclip="attn:13,mlp:11.5",
                    quant__keep_float_max_numel=1024)
    primed = []
    monkeypatch.setattr(T, "prime_gptq", lambda device: primed.append(device) or prime_gptq(device))
    s = train(c, tmp_path / "g")
    assert primed == [torch.device("cpu")]  # the solve primed in the warm-up, before the clock
    assert s["gptq_s"] > 0 and s["train_time_s"] == s["loop_time_s"] + s["gptq_s"]
    assert s["loop_time_s"] < 2.2  # the loop stopped inside its share (3 s - 1 s reserved), jitter aside
    header, _ = read_artifact(tmp_path / "g" / "model.pgz")
    notes = {t["name"]: t.get("fmt_note") for t in header["tensors"]}
    # best-sp8192's export end to end: GPTQ on the SDClip'd matrices and on the tied embedding
    assert notes["tok_emb.weight"] == "gptq" and notes["blocks.0.mlp.fc.weight"] == "gptq"
    log = (tmp_path / "g" / "train.log").read_text()
    assert "gptq:" in log and "compression" in log  # compression is timed apart, after the clock
    with pytest.raises(ConfigError, match="QAT"):
        apply_overrides(c, ["schedule.qat_start_frac=0.5"])


def test_skipping_the_prequant_sliding_eval_changes_no_score(tmp_path, embedded_dir):
    """eval.prequant_sliding=false (the ablation rows' minutes): the float weights are scored plain only, and every
    score the run reports -- pre-quant plain, roundtrip plain and sliding, the final -- is bit for bit the run's with
    the pre-quant sliding eval."""
    c = tiny_config(eval__ttt="false", eval__final="sliding")
    full = train(c, tmp_path / "full")
    short = train(tiny_config(eval__ttt="false", eval__final="sliding", eval__prequant_sliding="false"),
                  tmp_path / "short")
    assert set(full["prequant"]) == {"plain", "sliding"} and set(short["prequant"]) == {"plain"}
    assert short["prequant"]["plain"]["val_bpb"] == full["prequant"]["plain"]["val_bpb"]
    for mode in ("plain", "sliding"):
        assert short["roundtrip"][mode]["val_bpb"] == full["roundtrip"][mode]["val_bpb"], mode
    assert short["val_bpb"] == full["val_bpb"] == full["roundtrip"]["sliding"]["val_bpb"]
    assert "pre-quant sliding" not in (tmp_path / "short" / "train.log").read_text()


def test_requant_compares_export_policies_on_the_same_weights(tmp_path, embedded_dir):
    """A run that kept its float weights is exported again under other policies; each row gives bytes and the
    quant gap, and the run's own policy reproduces the run's roundtrip score exactly."""
    c = tiny_config(eval__ttt="false", eval__sliding_stride=0, train__keep_float="true", quant__mlp="int5",
                    quant__attn="int5", quant__keep_float_max_numel=1024)
    s = train(c, tmp_path / "r")
    out = tmp_path / "rq.json"
    r = run_cli(["-m", "pgolf", "requant", str(tmp_path / "r"), "--variant", "own:", "--variant",
                 "sdclip:quant.sdclip=attn:10,mlp:10", "--variant", "gptq:quant.gptq=true;quant.gptq_batches=2",
                 "--variant", "auto:quant.compressor=auto", "--json", str(out)])
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {v["variant"]: v for v in json.loads(out.read_text())["variants"]}
    assert rows["own"]["modes"]["plain"]["roundtrip"] == s["roundtrip"]["plain"]["val_bpb"]
    assert rows["auto"]["bytes_model"] <= rows["own"]["bytes_model"]
    assert rows["sdclip"]["modes"]["plain"]["gap"] != rows["own"]["modes"]["plain"]["gap"]
    assert rows["gptq"]["policy"]["mlp"] == "int5" and (tmp_path / "r" / "requant-gptq.pgz").is_file()
    # a requant artifact carries its run's config: `pgolf eval` scores it with the run's settings, to the digit
    # (it once fell back to pgolf's default sequence length and eval batch and printed another number)
    e = run_cli(["-m", "pgolf", "eval", str(tmp_path / "r" / "requant-gptq.pgz"), "--mode", "plain"])
    assert e.returncode == 0, e.stderr[-2000:]
    assert f"val_bpb:{rows['gptq']['modes']['plain']['roundtrip']:.8f}" in e.stdout, e.stdout
    # a mode the run cannot score is refused before any work, in one line
    bad = run_cli(["-m", "pgolf", "requant", str(tmp_path / "r"), "--modes", "plain,sliding"])
    assert bad.returncode == 2 and "eval.sliding_stride" in bad.stderr and "Traceback" not in bad.stderr


def test_ttt_variants_script_scores_each_variant_on_one_artifact(tiny_run, tmp_path):
    """bench/ttt_variants.sh ARTIFACT "NAME:k=v;k=v" ...: `pgolf eval --mode ttt` per variant on the same weights,
    each output in $OUT/ttt-NAME.txt, a row per variant in $OUT/ttt_variants.json; the artifact's own settings give
    the run's TTT score to the digit on the data the artifact records, a variant's sets move it, a variant that
    fails leaves no score and exit 1, a malformed variant, a missing artifact or a DATA that is not a folder is one
    line and exit 2 before any eval."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    out, s = tiny_run
    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "bin").mkdir()  # python3 is this interpreter (a symlink would lose its virtual environment)
    (tmp_path / "bin" / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (tmp_path / "bin" / "python3").chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", PYTHONPATH=str(repo),
               OUT=str(tmp_path / "out"))
    env.pop("DATA", None)

    def variants(*args, **extra):
        return subprocess.run(["bash", str(repo / "bench" / "ttt_variants.sh"), *args], env=dict(env, **extra),
                              capture_output=True, text=True, timeout=600)

    r = variants(str(out / "model.pgz"), "own:", "short:eval.ttt_short_chunk=4;eval.ttt_short_len=1000000",
                 "bad:eval.ttt_short_chunk=4096")
    assert r.returncode == 1, r
    rows = {row["name"]: row for row in json.loads((tmp_path / "out" / "ttt_variants.json").read_text())}
    assert rows["own"]["val_bpb"] == pytest.approx(s["roundtrip"]["ttt"]["val_bpb"], abs=1e-8)
    assert rows["short"]["val_bpb"] not in (None, rows["own"]["val_bpb"]) and rows["bad"]["val_bpb"] is None
    assert "ttt_short_chunk=4096" in (tmp_path / "out" / "ttt-bad.txt").read_text()
    for args, extra in (((str(out / "model.pgz"), "no-colon"), {}), ((str(tmp_path / "none.pgz"), "own:"), {}),
                        ((str(out / "model.pgz"), "own:"), {"DATA": str(tmp_path / "no-such-folder")})):
        r = variants(*args, **extra)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "==" not in r.stdout, r
