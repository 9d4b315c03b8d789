"""Issue 14: pgolf audit. A smoke run passes every check it can make; each rule broken on purpose fails its check
(over budget, leaked validation documents, unscored tokens, a model that peeks at the next token, a TTT that trains
before scoring, a mixture that is not normalised, a time overrun in a log)."""
import base64
import json
import lzma
import math
import shutil

import numpy as np
import pytest
import torch

from conftest import run_cli, tiny_overrides
from pgolf import audit as A
from pgolf import legality as L
from pgolf.cli import main
from pgolf.config import EXIT_AUDIT_FAIL
from pgolf.data import write_shard
from pgolf.evaluate import eval_ttt, eval_windows
from pgolf.files import sha256_file
from pgolf.records import needed_files, parse_log
from test_eval import V, _cheating_ttt, toy_model, toy_table, toy_tokens

CPU = torch.device("cpu")


def sets(**over) -> list[str]:
    return [a for o in tiny_overrides(**over) for a in ("--set", o)]


def lines(out: str) -> dict[str, str]:
    """'area: name' -> status, from an audit report."""
    res = {}
    for ln in out.splitlines():
        for status in (A.PASS, A.FAIL, A.NOT_CHECKABLE):
            if ln.startswith(status + " "):
                area_name = ln[len(status):].strip().split(": ")
                res[f"{area_name[0]}: {area_name[1]}"] = status
    return res


# ---------------------------------------------------------------------------------------------------------------
# data folders built from the embedded corpus: a clean one, and a leaky one


def _docs(embedded_dir, split):
    return list(A.documents([embedded_dir / f"fineweb_{split}_000000.bin"], 1))


def _write(folder, val_docs, train_parts, tok):
    folder.mkdir(parents=True)
    write_shard(folder / "fineweb_val_000000.bin", np.concatenate(val_docs))
    for i, part in enumerate(train_parts):
        write_shard(folder / f"fineweb_train_{i:06d}.bin", np.concatenate(part) if isinstance(part, list) else part)
    shutil.copy(tok, folder / "tok.model")
    (folder / "manifest.json").write_text(json.dumps({"tokenizer_sha256": sha256_file(tok)}))
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory, embedded_dir):
    """{clean, leaky}: the same ~4,000 validation tokens (whole documents); the leaky build's train shards also hold
    every other validation document, one of them across the boundary of its two train shards."""
    root = tmp_path_factory.mktemp("audit-data")
    val, n = [], 0
    for d in _docs(embedded_dir, "val"):
        if d.size <= 1200:
            val.append(np.array(d))
            n += d.size
        if n >= 4000:
            break
    train = [np.array(d) for d in _docs(embedded_dir, "train")]
    tok = embedded_dir / "embedded.model"
    clean = _write(root / "clean", val, [train], tok)
    leaked = val[::2]
    stream = np.concatenate(train[:200] + leaked + train[200:])
    cut = sum(d.size for d in train[:200]) + leaked[0].size // 2  # inside the first leaked document
    leaky = _write(root / "leaky", val, [stream[:cut], stream[cut:]], tok)
    return {"clean": clean, "leaky": leaky, "val_docs": len(val), "leaked": len(leaked)}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("audit-runs")
    r = run_cli(["-m", "pgolf", "train", "--recipe", "smoke", *sets(eval__max_tokens=0), "--data", str(data["clean"]),
                 "--out", str(out), "--name", "good"], env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "good"


# ---------------------------------------------------------------------------------------------------------------
# a passing smoke run


def test_a_smoke_run_passes_every_check(good_run, capsys):
    assert main(["audit", str(good_run)]) == 0
    out = capsys.readouterr().out
    got = lines(out)
    for check in ("bytes: files counted", "bytes: total <= 16,000,000", "bytes: shipped code = code that trained",
                  "time: training <= 600 s", "time: eval <= 600 s", "data: every val token scored",
                  "data: no val document in train", "data: tokenizer has a standalone '\u2581'",
                  "data: bytes of the original text", "legal: causal", "legal: normalised distribution",
                  "legal: score before update (TTT)", "legal: single pass"):
        assert got.get(check) == A.PASS, (check, out)
    assert got["stats: seeds"] == A.NOT_CHECKABLE  # one seed
    assert "0 fail" in out and "modes: plain, sliding, ttt" in out


def test_a_records_folder_written_by_submit_passes(good_run, tmp_path, capsys):
    """pgolf submit audits first (it passes), writes the folder with the code's sha256; the folder audits clean."""
    assert main(["submit", str(good_run), "--name", "ok", "--author", "a", "--github-id", "g", "--out",
                 str(tmp_path)]) == 0
    (folder,) = list(tmp_path.iterdir())
    meta = json.loads((folder / "submission.json").read_text())
    assert meta["code_sha256"] == sha256_file(folder / "train_gpt.py")
    capsys.readouterr()
    assert main(["audit", str(folder)]) == 0
    got = lines(capsys.readouterr().out)
    assert got["bytes: total <= 16,000,000"] == got["bytes: shipped code = code that trained"] == A.PASS
    assert got["time: training <= 600 s"] == got["time: eval <= 600 s"] == A.PASS
    assert got["legal: causal"] == A.NOT_CHECKABLE  # no artifact in a records folder


# ---------------------------------------------------------------------------------------------------------------
# bytes


def test_over_budget_pgolf_run_fails(good_run, tmp_path, capsys):
    run = tmp_path / "big"
    shutil.copytree(good_run, run)
    (run / "model.pgz").write_bytes(np.random.default_rng(0).bytes(15_990_000))
    s = json.loads((run / "summary.json").read_text())
    s["bytes_model"] = 15_990_000
    (run / "summary.json").write_text(json.dumps(s))
    assert main(["audit", str(run), "--no-legal"]) == EXIT_AUDIT_FAIL
    out = capsys.readouterr().out
    assert lines(out)["bytes: total <= 16,000,000"] == A.FAIL and "over by" in out


def _records_folder(tmp, log_text, files: dict[str, bytes | str], meta=None):
    tmp.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        p = tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body if isinstance(body, bytes) else body.encode())
    for name, text in (log_text if isinstance(log_text, dict) else {"train_seed1.log": log_text}).items():
        (tmp / name).write_text(text)
    (tmp / "submission.json").write_text(json.dumps(meta or {"name": "t", "val_bpb": 1.1}))
    return tmp


def _log(train_ms=590000, steps=5000, gptq_s=None, eval_ms=300000, model=15_900_000, code=None, tokens=None,
         loss=2.0, bpb=None):
    bpb = bpb if bpb is not None else (tokens * loss / (151_080_363 * math.log(2)) if tokens else 1.1)
    out = ["Hyperparameters:", "  seed: 1",
           f"{steps}/20000 train_loss: 2.5 train_time: {train_ms / 60000:.1f}m tok/s: 8000000",
           f"stopping_early: wallclock_cap train_time: {train_ms}ms step: {steps}/20000"]
    if tokens:
        out.insert(2, f"val_tokens: {tokens}")
    if code is not None:
        out.append(f"Code size: {code} bytes")
    if gptq_s is not None:
        out += ["GPTQ:collecting Hessians from calibration data...", f"GPTQ:collected 67 Hessians in {gptq_s}s"]
    out += [f"Serialized model quantized+brotli: {model} bytes",
            f"quantized_ttt_phased val_loss:{loss:.8f} val_bpb:{bpb:.8f} eval_time:{eval_ms}ms"]
    return "\n".join(out) + "\n"


def test_a_helper_left_out_of_the_count_is_counted(tmp_path, capsys):
    """The frontier's case: a C kernel and its loader shipped beside train_gpt.py, left out of the count. The entry
    here is a self-extracting wrapper, so the import is only visible once decompressed."""
    inner = b"import os\nfrom ngram_helper import tilt\nprint(tilt())\n"
    blob = base64.b85encode(lzma.compress(inner)).decode()
    entry = f'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("{blob}")))\n'
    kernel = np.random.default_rng(1).bytes(120_000)  # incompressible
    helper = ("import os\n"
              "def tilt():\n    return open(os.path.join(os.path.dirname(__file__), 'kernels', 'fused.so'), 'rb')\n")
    folder = _records_folder(tmp_path / "rec", _log(model=15_950_000, code=len(entry)),
                             {"train_gpt.py": entry, "ngram_helper.py": helper, "kernels/fused.so": kernel,
                              "prepare_data.py": "print('not needed at run time')\n"})
    cf = needed_files(folder)
    assert set(cf.counted) == {"train_gpt.py", "ngram_helper.py", "kernels/fused.so"}, cf.counted
    assert cf.not_needed == ["prepare_data.py"]
    assert main(["audit", str(folder)]) == EXIT_AUDIT_FAIL
    out = capsys.readouterr().out
    assert lines(out)["bytes: total <= 16,000,000"] == A.FAIL and "kernels/fused.so 120,000" in out
    assert lines(out)["bytes: shipped code = code that trained"] == A.PASS  # the log printed the entry's size


def test_a_log_that_ran_other_code_fails(tmp_path, capsys):
    folder = _records_folder(tmp_path / "rec", _log(code=999), {"train_gpt.py": "print('hello')\n"})
    assert main(["audit", str(folder)]) == EXIT_AUDIT_FAIL
    assert lines(capsys.readouterr().out)["bytes: shipped code = code that trained"] == A.FAIL


# ---------------------------------------------------------------------------------------------------------------
# time


def test_a_time_overrun_in_a_log_fails(tmp_path, capsys):
    """GPTQ calibration reads training data: it counts inside the 600 s (#677, #1950). The loop's own overshoot
    by a step or so (the baseline's stopping rule) does not fail."""
    logs = {"train_seed1.log": _log(train_ms=599613, steps=4960, gptq_s=3.5),  # 603.1 s
            "train_seed2.log": _log(train_ms=592065, steps=4900, gptq_s=3.5),  # 595.6 s
            "train_seed3.log": _log(train_ms=600038, steps=13780)}  # the baseline's 600.04 s
    folder = _records_folder(tmp_path / "rec", logs, {"train_gpt.py": "print(1)\n"})
    assert main(["audit", str(folder)]) == EXIT_AUDIT_FAIL
    out = capsys.readouterr().out
    assert lines(out)["time: training <= 600 s"] == A.FAIL
    line = next(ln for ln in out.splitlines() if "time: training" in ln)
    assert "train_seed1.log by 3.11s" in line and "train_seed2.log by" not in line and "train_seed3.log by" not in line
    assert lines(out)["time: eval <= 600 s"] == A.PASS

    folder = _records_folder(tmp_path / "rec2", _log(eval_ms=612000), {"train_gpt.py": "print(1)\n"})
    assert main(["audit", str(folder)]) == EXIT_AUDIT_FAIL
    assert lines(capsys.readouterr().out)["time: eval <= 600 s"] == A.FAIL


def test_parse_log_reads_both_formats(good_run, tmp_path):
    r = parse_log(good_run / "train.log")
    s = json.loads((good_run / "summary.json").read_text())
    assert r.train_s == pytest.approx(s["train_time_s"], abs=0.05) and r.steps == s["steps"]
    assert r.model_bytes == s["bytes_model"] and r.code_logged == s["bytes_code"]
    assert r.val_bpb == pytest.approx(s["val_bpb"], abs=1e-6) and r.eval_label == f"roundtrip {s['final_mode']}"
    p = tmp_path / "x.log"
    p.write_text("    log0(f'step:{step}/{n} train_time:{t:.0f}ms')\n" + _log(gptq_s=2.0, code=10))
    r = parse_log(p)  # the embedded source line does not count as a step
    assert (r.train_s, r.steps, r.train_extra, r.code_logged) == (590.0, 5000, [("GPTQ Hessians from training data",
                                                                                 2.0)], 10)


# ---------------------------------------------------------------------------------------------------------------
# data


def test_leaked_val_docs_fail_with_the_overlap_count(good_run, data, capsys):
    assert main(["audit", str(good_run), "--data", str(data["leaky"]), "--no-legal"]) == EXIT_AUDIT_FAIL
    out = capsys.readouterr().out
    assert lines(out)["data: no val document in train"] == A.FAIL
    assert f"{data['leaked']} of {data['val_docs']} val documents" in out
    leaked, n_val, _ = A.val_train_overlap(A.shard_files(data["leaky"], A._VAL),
                                           A.shard_files(data["leaky"], A._TRAIN), 1)
    assert (leaked, n_val) == (data["leaked"], data["val_docs"])  # the one across two shards too


def test_unscored_tokens_fail(tmp_path, data, capsys):
    """A run that scored a prefix of the validation set (eval.max_tokens; #1854 scored 17%)."""
    r = run_cli(["-m", "pgolf", "train", "--recipe", "smoke", *sets(eval__max_tokens=700, eval__ttt="false"),
                 "--data", str(data["clean"]), "--out", str(tmp_path), "--name", "short"], env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert main(["audit", str(tmp_path / "short"), "--no-legal"]) == EXIT_AUDIT_FAIL
    out = capsys.readouterr().out
    assert lines(out)["data: every val token scored"] == A.FAIL and "699 of" in out
    # submit runs the audit and refuses
    assert main(["submit", str(tmp_path / "short"), "--name", "x", "--author", "a", "--github-id", "g",
                 "--out", str(tmp_path / "rec")]) == 2
    assert "refusing to submit: pgolf audit failed" in capsys.readouterr().err
    assert not (tmp_path / "rec").exists()


def test_an_eval_that_skips_or_repeats_tokens_fails_single_pass():
    toks = toy_tokens(203)
    table = toy_table()

    def plain(model, t):
        return eval_windows(model, t, table, 32, 32, 3, CPU)

    def truncated(model, t):  # the challenge baseline's cut to a multiple of seq_len: the tail is never scored
        usable = (t.numel() - 1) // 32 * 32
        return eval_windows(model, t[:usable + 1], table, 32, 32, 3, CPU)

    def twice_tail(model, t):  # right count, wrong targets: the last window scored twice, the first never
        a = eval_windows(model, t[32:], table, 32, 32, 3, CPU)
        b = eval_windows(model, t[-33:], table, 32, 32, 3, CPU)
        return type(a)(a.nll + b.nll, a.tokens + b.tokens, a.bytes + b.bytes)

    assert L.check_single_pass(plain, toks, V).ok
    v = L.check_single_pass(truncated, toks, V)
    assert not v.ok and "scored 192 targets" in v.detail
    v = L.check_single_pass(twice_tail, toks, V)
    assert not v.ok and "not every target once" in v.detail


def test_byte_counts_off_the_published_val_text_fail(tmp_path, capsys):
    """The bytes a score divides by, recovered from its log, against the FineWeb validation text's: a byte table
    that charges 4% too many bytes (the Scylla table) fails; the right one passes."""
    n, loss = 40_540_160, 2.795
    good = _log(tokens=n, loss=loss)
    bad = _log(tokens=n, loss=loss, bpb=n * loss / (151_080_363 * 1.0413 * math.log(2)))
    for name, text, want in (("ok", good, A.PASS), ("bad", bad, A.FAIL)):
        folder = _records_folder(tmp_path / name, text, {"train_gpt.py": "print(1)\n"})
        main(["audit", str(folder)])
        assert lines(capsys.readouterr().out)["data: bytes of the original text"] == want, name


def test_a_tokenizer_without_the_space_piece_fails(tmp_path, embedded_dir):
    from pgolf.embedded import documents
    from pgolf.tokenizer import train_tokenizer

    import sentencepiece as spm

    texts = ["".join(t.split()) for t in documents()[:300]]  # no whitespace at all: no "▁" piece is learnt
    model = train_tokenizer(texts, 400, str(tmp_path / "nospace"), num_threads=1).model
    sp = spm.SentencePieceProcessor(model_file=str(model))
    assert sp.piece_to_id("\u2581") == sp.unk_id()
    c = A._check_tokenizer(tmp_path / "nospace.model", None)
    assert c.status == A.FAIL and "#897" in c.detail
    assert A._check_tokenizer(embedded_dir / "embedded.model", None).status == A.PASS


# ---------------------------------------------------------------------------------------------------------------
# legality: a cheating model or eval fails each check


class Peeker(torch.nn.Module):
    """A GPT whose logits at position t also see the input at t+1 (the next token): what causal masking forbids."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, y, reduction="none", lora=None):
        logits = self.model.logits(x).double()
        nxt = torch.roll(x, -1, dims=1)
        logits = logits + 3.0 * torch.nn.functional.one_hot(nxt, logits.size(-1)).double()
        return torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")


def test_a_model_that_peeks_at_the_next_token_fails_causality():
    model = toy_model()
    toks = toy_tokens(65)
    x, y = toks[:64][None], toks[1:65][None]
    honest = L.check_causal(lambda a, b: model(a, b, reduction="none"), x, y, V)
    assert honest.ok, honest.detail
    peek = Peeker(model)
    v = L.check_causal(lambda a, b: peek(a, b), x, y, V)
    assert not v.ok and "reads a later token" in v.detail


def test_a_mixture_that_is_not_normalised_fails():
    """#886: a blend whose probabilities over the vocabulary do not sum to 1. Two ways to cheat: a distribution
    that sums to 1.3, and a scorer that mixes something into the target's probability only."""
    model = toy_model()
    toks = toy_tokens(65)
    x, y = toks[:64][None], toks[1:65][None]

    def dist(a):
        return torch.log_softmax(model.logits(a).double(), -1)

    def scorer(a, b):
        return model(a, b, reduction="none").double()

    assert L.check_normalised(dist, scorer, x, y).ok

    def dist13(a):  # p' = 1.3 p: sums to 1.3
        return dist(a) + math.log(1.3)

    def scorer13(a, b):
        return scorer(a, b) - math.log(1.3)

    v = L.check_normalised(dist13, scorer13, x, y)
    assert not v.ok and "sum to 1.300000" in v.detail

    cache = torch.full((V,), 0.5, dtype=torch.float64)  # a "cache" that gives every token 0.5

    def blended(a, b):  # 0.7 p(target) + 0.3 cache(target): only the target's probability is ever computed
        p = torch.exp(-scorer(a, b))
        return -torch.log(0.7 * p + 0.3 * cache[b])

    v = L.check_normalised(dist, blended, x, y)
    assert not v.ok and "not -log of the distribution" in v.detail


def test_a_ttt_that_trains_before_scoring_fails():
    model, table = toy_model(), toy_table()
    for p in model.parameters():
        p.requires_grad_(False)
    toks = toy_tokens(300, seed=4, bos_every=70)
    kw = dict(rank_r=2, lr=0.05, chunk=8, seq_len=24, batch_docs=2)
    ok = L.check_score_before_update(eval_ttt, model, toks, table, 1, kw)
    assert ok.ok, ok.detail

    def cheat(model, t, table, device, token_nll, **k):
        return _cheating_ttt(model, t, table, token_nll=token_nll, **k)

    v = L.check_score_before_update(cheat, model, toks, table, 1, kw)
    assert not v.ok and "before the change" in v.detail
    assert L.check_single_pass_ttt(eval_ttt, model, toks, table, kw).ok


# ---------------------------------------------------------------------------------------------------------------
# statistics


def test_welch_against_a_previous_record_says_which_bar_it_meets(good_run, tmp_path, capsys):
    run = tmp_path / "runs"
    for i, loss in enumerate((2.3000, 2.3010, 2.2995)):
        shutil.copytree(good_run, run / f"s{i}")
        s = json.loads((run / f"s{i}" / "summary.json").read_text())
        s["val_loss"], s["seed"] = loss, i
        (run / f"s{i}" / "summary.json").write_text(json.dumps(s))
    prev = tmp_path / "prev" / "submission.json"
    prev.parent.mkdir()

    def verdict(prev_losses):
        prev.write_text(json.dumps({"seed_results": {str(k): {"val_loss": v} for k, v in enumerate(prev_losses)}}))
        main(["audit", str(run), "--no-legal", "--against", str(prev)])
        out = capsys.readouterr().out
        return lines(out)["stats: beats the previous record"], next(ln for ln in out.splitlines() if "beats" in ln)

    status, line = verdict([2.3200, 2.3210, 2.3190])  # 0.02 nats better, tight: both bars
    assert status == A.PASS and "README bar" in line and line.count("-> met") == 2
    status, line = verdict([2.3012, 2.3020, 2.3005])  # 0.001 better: the de-facto bar only
    assert status == A.PASS and "p=" in line and "-> not met. De-facto" in line and line.endswith("-> met")
    status, line = verdict([2.2990, 2.3000, 2.2985])  # worse
    assert status == A.FAIL and line.count("not met") == 2
    main(["audit", str(run), "--no-legal", "--against", "2.32,2.321,2.319"])
    assert lines(capsys.readouterr().out)["stats: seeds"] == A.PASS


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["audit", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["audit", str(tmp_path / "empty")]) == 2
    assert "neither a run directory" in capsys.readouterr().err


def test_bad_against_is_one_line_and_exit_2(good_run, capsys):
    assert main(["audit", str(good_run), "--no-legal", "--against", "x,y"]) == 2
    assert "--against 'x,y'" in capsys.readouterr().err


def test_per_seed_losses_come_from_the_logs_the_submission_names(tmp_path):
    """A submission.json that lists only val_bpb per seed: the val_loss of each is the log whose score it is, not
    every log of the folder (a compliance re-run keeps the original logs beside the new ones)."""
    from pgolf.records import folder_logs, per_seed_losses, read_submission

    logs = {"train_seed1_original.log": _log(loss=2.30, bpb=1.060), "train_seed1_rerun.log": _log(loss=2.40, bpb=1.070),
            "train_seed2_original.log": _log(loss=2.31, bpb=1.061), "train_seed2_rerun.log": _log(loss=2.41, bpb=1.071)}
    meta = {"seed_results": {"1": {"val_bpb": 1.060}, "2": {"val_bpb": 1.061}}}
    folder = _records_folder(tmp_path / "rec", logs, {"train_gpt.py": "print(1)\n"}, meta)
    assert per_seed_losses(read_submission(folder), folder_logs(folder)) == [2.30, 2.31]
