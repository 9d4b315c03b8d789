"""Issue 15: use a trained model -- pgolf.load, GPT.generate, pgolf sample, and the README's Python example."""
import json
import re
import shutil

import pytest
import torch

from conftest import REPO, run_cli, tiny_config, tiny_overrides
from pgolf.config import InputError
from pgolf.model import GPT


@pytest.fixture(scope="module")
def run(tmp_path_factory, embedded_dir):
    """The smoke recipe with the tiny overrides, trained from the shell as a user would."""
    out = tmp_path_factory.mktemp("api")
    r = run_cli(["-m", "pgolf", "train", "--recipe", "smoke", "--out", str(out), "--name", "tiny",
                 *[a for o in tiny_overrides(eval__ttt="false") for a in ("--set", o)]])
    assert r.returncode == 0, r.stderr[-2000:]
    return out / "tiny"


LOAD_AND_SAMPLE = """
import sys, torch, pgolf
model, sp = pgolf.load(sys.argv[1])
assert not model.training
ids = torch.tensor([[model.cfg.bos_id] + sp.encode("The function")])
out = model.generate(ids, max_new_tokens=20, temperature=0.8, generator=torch.Generator().manual_seed(int(sys.argv[2])))
assert out.shape == (1, ids.size(1) + 20)
print(out[0, ids.size(1):].tolist())
print(repr(sp.decode(out[0, ids.size(1):].tolist())))
"""


def test_load_in_a_fresh_process_samples_deterministically(run):
    """Acceptance 1: pgolf.load in a new process, 20 tokens, the same seed gives the same text."""
    outs = [run_cli(["-c", LOAD_AND_SAMPLE, str(run), seed]) for seed in ("1", "1", "2")]
    for r in outs:
        assert r.returncode == 0, r.stderr[-2000:]
    assert outs[0].stdout == outs[1].stdout
    assert outs[0].stdout != outs[2].stdout  # the seed matters
    assert len(json.loads(outs[0].stdout.splitlines()[0])) == 20


def test_pgolf_sample_from_the_shell(run):
    args = ["-m", "pgolf", "sample", str(run), "--prompt", "The function", "--tokens", "20", "--seed", "5",
            "--device", "cpu"]
    a, b = run_cli(args), run_cli(args)
    assert a.returncode == 0, a.stderr[-2000:]
    assert a.stdout == b.stdout and a.stdout.strip()
    # the same continuation as the Python API with the same settings (the artifact alone: run/model.pgz)
    from pgolf.sample import continue_text, load

    model, sp = load(run / "model.pgz")
    assert a.stdout == continue_text(model, sp, "The function", 20, 0.8, 0, 5) + "\n"
    greedy = run_cli(["-m", "pgolf", "sample", str(run), "--prompt", "The", "--tokens", "8", "--temperature", "0"])
    assert greedy.returncode == 0 and greedy.stdout == continue_text(model, sp, "The", 8, 0.0) + "\n"


def test_readme_python_example_runs(run):
    """The README's Python API example, as printed there, against a trained run (in a fresh process)."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) == 5 and "runs/RUN" in code
    code = code.replace("runs/RUN", str(run))
    a, b = run_cli(["-c", code]), run_cli(["-c", code])
    assert a.returncode == 0, a.stderr[-2000:]
    assert a.stdout == b.stdout and a.stdout.strip()


def test_generate_greedy_top_k_and_generator():
    torch.manual_seed(0)
    cfg = tiny_config().model
    cfg.vocab_size, cfg.train_seq_len = 64, 8
    model = GPT(cfg).eval()
    torch.nn.init.normal_(model.tok_emb.weight, 0, 1.0)  # logits that are not all equal
    ids = torch.randint(2, 64, (2, 5))
    greedy = model.generate(ids, 12, temperature=0)
    assert greedy.shape == (2, 17) and torch.equal(greedy[:, :5], ids)
    # greedy = the argmax of the model's own logits over the last train_seq_len tokens, step by step
    ctx = ids
    for _ in range(12):
        ctx = torch.cat((ctx, model.logits(ctx[:, -8:])[:, -1].argmax(-1, keepdim=True)), 1)
    assert torch.equal(ctx, greedy)
    assert torch.equal(model.generate(ids, 12, temperature=1.0, top_k=1), greedy)  # top-1 is greedy
    a = model.generate(ids, 12, generator=torch.Generator().manual_seed(3))
    b = model.generate(ids, 12, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_tokenizer_found_by_fingerprint_or_refused(run, tmp_path, monkeypatch):
    """An artifact moved to a machine where the paths it recorded do not exist: the tokenizer is the file beside it
    with the right sha256 (whatever its name); none there is a clear error naming the fingerprint."""
    from pgolf.quant import read_artifact
    from pgolf.sample import find_run_tokenizer, load

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PGOLF_DATA", raising=False)
    monkeypatch.setenv("PGOLF_CACHE", str(tmp_path / "no-cache"))
    moved = tmp_path / "moved"
    moved.mkdir()
    art = moved / "model.pgz"
    shutil.copy(run / "model.pgz", art)
    meta = read_artifact(art)[0]["meta"]
    meta["config"]["data"].update(path=str(tmp_path / "gone"), tokenizer=str(tmp_path / "gone.model"))
    want = meta["tokenizer_sha256"]
    with pytest.raises(InputError, match=want[:12]):
        find_run_tokenizer(art, meta)
    (moved / "a.model").write_bytes(b"another tokenizer")
    with pytest.raises(InputError, match="not the tokenizer"):
        find_run_tokenizer(art, meta, given=moved / "a.model")
    shutil.copy(run / "tokenizer.model", moved / "b.model")
    assert find_run_tokenizer(art, meta) == moved / "b.model"  # a.model was looked at and passed over
    model, sp = load(moved)
    assert sp.vocab_size() == model.cfg.vocab_size == 1024 and not model.training


def test_the_run_directory_keeps_its_tokenizer_and_provenance(run):
    from pgolf.files import sha256_file

    s = json.loads((run / "summary.json").read_text())
    env = json.loads((run / "env.json").read_text())
    assert sha256_file(run / "tokenizer.model") == s["tokenizer_sha256"]
    assert s["pgolf"] == env["pgolf"] and s["git"] == env["git"] and s["git"]  # a commit or "not a git checkout"
    assert env["code_sha256"] == s["code_sha256"] == sha256_file(run / "train_gpt.py")
