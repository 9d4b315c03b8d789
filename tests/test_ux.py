"""Issue 15: the everyday edges -- config files and keys, recipes, --version, exit codes, BrokenPipe and Ctrl-C,
trackers, progress lines, plots."""
import dataclasses
import functools
import json
import subprocess
import sys
import types

import pytest
import torch

from conftest import REPO, run_cli, tiny_config, tiny_overrides
from pgolf import evaluate as E
from pgolf.cli import main
from pgolf.quant import read_artifact
from pgolf.config import SECTIONS, Config, ConfigError, apply_overrides
from pgolf.recipes import RECIPES, get_recipe
from pgolf.rundir import read_metrics
from pgolf.train import train


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, embedded_dir):
    out = tmp_path_factory.mktemp("ux") / "tiny"
    return out, train(tiny_config(eval__ttt="false"), out)


def _losses(run):
    return [m["loss"] for m in read_metrics(run) if m["kind"] == "train"]


# ---------------------------------------------------------------------------------------------------------------
# config files, keys, recipes


def test_a_runs_config_json_reruns_it_exactly(tiny_run, tmp_path, capsys):
    run, s = tiny_run
    assert main(["train", "--config", str(run / "config.json"), "--out", str(tmp_path), "--name", "again"]) == 0
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert _losses(tmp_path / "again") == _losses(run)  # bit for bit
    timing = ("eval_s", "eval_s_challenge_8gpu", "warmup_s")
    assert again["val_bpb"] == s["val_bpb"] and {k: v for k, v in again["roundtrip"]["sliding"].items()
                                                 if k not in timing} == \
        {k: v for k, v in s["roundtrip"]["sliding"].items() if k not in timing}
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == json.loads((run / "config.json").read_text())
    a, b = read_artifact(run / "model.pgz")[1], read_artifact(tmp_path / "again" / "model.pgz")[1]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # (the packed files differ by a few bytes: config.json holds the resolved vocab_size, the first run had 0)


def test_toml_config_files(tmp_path, capsys):
    from pgolf.keys import to_toml

    for name in RECIPES:
        cfg = get_recipe(name)
        p = tmp_path / f"{name}.toml"
        p.write_text(to_toml(cfg.to_dict()))
        assert Config.from_file(str(p)).to_dict() == cfg.to_dict(), name
    # a hand-written file: only what differs, ints where floats go
    p = tmp_path / "mine.toml"
    p.write_text('name = "mine"\n[model]\nnum_layers = 3\nmlp_mult = 3\n[quant]\nkeep_fp16 = ["tok_emb"]\n')
    c = Config.from_file(str(p))
    assert (c.name, c.model.num_layers, c.model.mlp_mult, c.quant.keep_fp16) == ("mine", 3, 3.0, ("tok_emb",))
    assert c.train == Config().train
    # and through the CLI: pgolf config show --config (with --set on top)
    assert main(["config", "show", "--config", str(p), "--set", "train.seed=7"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["model"]["num_layers"] == 3 and shown["train"]["seed"] == 7


@pytest.mark.parametrize("text,suffix,match", [
    ('{"model": {"num_layer": 3}}', ".json", "unknown keys in model"),
    ('{"model": {"num_layers": "3"}}', ".json", "model.num_layers='3': expected a int"),
    ('{"model": 3}', ".json", "section model"),
    ("{not json", ".json", "not valid JSON"),
    ("[model\nnum_layers = 3", ".toml", "not valid TOML"),
    ("[train]\ntracker = \"mlflow\"", ".toml", "train.tracker: unknown 'mlflow'"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, capsys, text, suffix, match):
    p = tmp_path / f"c{suffix}"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match.replace("(", r"\(")):
        Config.from_file(str(p))
    assert main(["predict", "--config", str(p)]) == 2
    assert match in capsys.readouterr().err


def test_config_and_recipe_together_is_a_usage_error(tmp_path, capsys):
    p = tmp_path / "c.json"
    p.write_text("{}")
    assert main(["predict", "--config", str(p), "--recipe", "best"]) == 2
    assert "--recipe or --config" in capsys.readouterr().err
    assert main(["predict", "--config", str(tmp_path / "missing.json")]) == 2


def test_config_keys_lists_every_field_with_type_default_and_meaning(capsys):
    from pgolf.keys import field_meanings, key_rows

    meanings = field_meanings()
    fields = {f"{sec}.{f.name}": f for sec, typ in SECTIONS.items() for f in dataclasses.fields(typ)}
    assert set(meanings) == set(fields) | {"name"}
    assert all(meanings.values()), [k for k, v in meanings.items() if not v]  # every field explained
    assert meanings["train.tracker"].startswith("none | wandb | tensorboard")
    assert main(["config", "keys"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(fields) + 1
    row = next(line for line in lines if line.startswith("model.num_layers "))
    assert row.split()[:3] == ["model.num_layers", "int", "9"] and "transformer blocks" in row
    assert main(["config", "keys", "--recipe", "best-v1"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("model.bigram_buckets "))
    assert "4096*" in row and "BigramHash" in row
    rows = {r[0]: r for r in key_rows("best-v1")}
    assert rows["quant.fit_order"][1] == "tuple[str, ...]" and rows["quant.fit_order"][2] == "mlp,attn,other,embed"


def test_help_points_at_the_keys_and_shows_examples():
    r = run_cli(["-m", "pgolf", "train", "--help"])
    assert r.returncode == 0 and "pgolf config keys" in r.stdout and "examples:" in r.stdout
    assert "--config FILE" in r.stdout
    top = run_cli(["-m", "pgolf", "--help"])
    assert "exit codes: 0 ok" in top.stdout and "pgolf sample" in top.stdout


def test_recipes_prints_whole_descriptions(capsys):
    assert main(["recipes"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for name, fn in RECIPES.items():
        assert " ".join(fn.__doc__.split()) in out, name  # never cut mid-sentence


def test_version():
    from pgolf import __version__

    r = run_cli(["-m", "pgolf", "--version"])
    assert r.returncode == 0 and r.stdout.startswith(f"pgolf {__version__} (") and "torch" in r.stdout


# ---------------------------------------------------------------------------------------------------------------
# exit codes, pipes, Ctrl-C


def test_seeds_exits_3_when_a_run_is_over_budget(tmp_path, capsys, embedded_dir):
    args = ["seeds", "--recipe", "smoke", "--seeds", "1", "--out", str(tmp_path), "--name", "g"]
    for o in tiny_overrides(eval__ttt="false", eval__sliding_stride=0, train__iterations=2, quant__budget_bytes=1000):
        args += ["--set", o]
    assert main(args) == 3
    assert "over budget: seed 1" in capsys.readouterr().out


def test_an_existing_run_folder_is_exit_2(tiny_run, capsys):
    run, _ = tiny_run
    assert main(["train", "--recipe", "smoke", "--out", str(run.parent), "--name", run.name]) == 2
    assert "already exists" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly(tiny_run):
    """`pgolf inspect ... | head`: the reader leaves before pgolf writes; no traceback, exit 0."""
    run, _ = tiny_run
    for cmd in (["inspect", str(run / "model.pgz")], ["config", "keys"], ["--help"]):
        p = subprocess.Popen([sys.executable, "-m", "pgolf", *cmd], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        p.stdout.close()  # before the interpreter has even imported pgolf
        err = p.stderr.read()
        assert p.wait(timeout=120) == 0, err
        assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_ctrl_c_outside_training_ends_quietly(tiny_run, monkeypatch, capsys):
    from pgolf import submission

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(submission, "cmd_inspect", interrupted)
    assert main(["inspect", str(tiny_run[0] / "model.pgz")]) == 4
    assert capsys.readouterr().err == "pgolf inspect: interrupted\n"


# ---------------------------------------------------------------------------------------------------------------
# trackers and progress


class FakeWandb(types.ModuleType):
    """Records what pgolf sends, as wandb.init(...).log(...) would receive it."""

    def __init__(self):
        super().__init__("wandb")
        self.calls = []

    def init(self, **kw):
        self.calls.append(("init", kw))
        return self

    def log(self, vals, step=None):
        self.calls.append(("log", vals, step))

    def finish(self):
        self.calls.append(("finish",))


@pytest.fixture
def every_progress_line(monkeypatch):
    """Progress lines at every unit instead of every 15 s."""
    monkeypatch.setattr(E.Progress, "__init__", functools.partialmethod(E.Progress.__init__, every_s=0.0))


def test_wandb_gets_every_metric_and_every_eval_mode_prints_progress(tmp_path, monkeypatch, every_progress_line,
                                                                    embedded_dir):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = tiny_config(train__tracker="wandb", train__val_every=6, eval__ttt_batch_docs=2)
    s = train(cfg, tmp_path / "w")
    init = fake.calls[0]
    assert init[0] == "init" and init[1]["project"] == "pgolf" and init[1]["name"] == "w"
    assert init[1]["config"]["train"]["tracker"] == "wandb"
    logs = [c for c in fake.calls if c[0] == "log"]
    assert [c[2] for c in logs if "train/loss" in c[1]] == list(range(1, 13))
    assert [c[1]["train/loss"] for c in logs if "train/loss" in c[1]] == _losses(tmp_path / "w")
    assert [c[2] for c in logs if "val/val_bpb" in c[1]] == [0, 6, 12]
    final = [c for c in logs if "final/val_bpb" in c[1]]
    assert len(final) == 1 and final[0][1]["final/val_bpb"] == s["val_bpb"]
    assert fake.calls[-1] == ("finish",)
    log = (tmp_path / "w" / "train.log").read_text()
    for label in ("plain eval: ", "sliding eval: ", "ttt tokens: "):  # in the loop, pre-quant and roundtrip
        line = next(x for x in log.splitlines() if x.startswith(label))
        assert " eta " in line and "elapsed" in line, line


def test_a_missing_tracker_is_one_line_and_training_goes_on(tmp_path, monkeypatch, capsys, embedded_dir):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    s = train(tiny_config(train__tracker="wandb", eval__ttt="false", eval__sliding_stride=0), tmp_path / "m")
    assert s["status"] == "complete"
    lines = [x for x in (tmp_path / "m" / "train.log").read_text().splitlines() if x.startswith("tracker:")]
    assert len(lines) == 1 and "pip install 'pgolf[track]'" in lines[0] and "metrics.jsonl" in lines[0]
    with pytest.raises(ConfigError, match="train.tracker"):
        apply_overrides(Config(), ["train.tracker=mlflow"])


def test_the_packed_file_carries_no_tracker():
    from pgolf.pack import build_script, embedded_config

    cfg = apply_overrides(get_recipe("smoke"), ["train.tracker=wandb"])
    assert embedded_config(build_script(cfg))["train"]["tracker"] == "none"
    assert build_script(cfg) == build_script(get_recipe("smoke"))  # tracked or not: one file, one code_sha256


def test_pgolf_eval_prints_progress_of_every_mode_on_stderr(tiny_run, every_progress_line, capsys):
    run, s = tiny_run
    assert main(["eval", str(run / "model.pgz"), "--mode", "plain", "--mode", "sliding", "--mode", "ttt",
                 "--set", "eval.ttt_batch_docs=2", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert {line.split(":")[0] for line in out.splitlines()} == {"plain", "sliding", "ttt"}  # scores alone
    for label in ("plain eval: ", "sliding eval: ", "ttt tokens: "):
        assert any(x.startswith(label) and " eta " in x for x in err.splitlines()), (label, err)
    got = {line.split(":")[0]: float(line.split("val_bpb:")[1].split()[0]) for line in out.splitlines()}
    assert got["plain"] == pytest.approx(s["roundtrip"]["plain"]["val_bpb"], abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# plots


def test_loss_png_and_its_title(tiny_run):
    from pgolf.plots import plot_run, smooth, title_of

    run, s = tiny_run
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    title = title_of(run, s)
    assert run.name in title and f"{s['val_bpb']:.4f}" in title and f"{s['bytes_total']:,}" in title
    assert plot_run(run, run / "again.png") == run / "again.png" and (run / "again.png").stat().st_size > 10_000
    assert smooth([2.0] * 40) == pytest.approx([2.0] * 40)  # debiased: no lag towards 0 at the start
    sm = smooth([float(i % 2) for i in range(200)])
    assert max(sm[100:]) - min(sm[100:]) < 0.2


def test_the_step_axis_extends_past_the_run_instead_of_piling_ticks_on_its_end():
    """loss.png's top axis maps seconds to steps along the run and at its mean rate beyond it: a tick of 3,000
    steps on a 2,603-step run falls outside the axis (interpolation alone put it on the run's last point, over the
    2,500 tick), and the two maps invert each other."""
    from pgolf.plots import _linear_map

    t, steps = [0.0, 10.0, 100.0, 226.0], [1, 100, 1100, 2603]
    to_step, to_t = _linear_map(t, steps), _linear_map(steps, t)
    assert to_t(3000) > 226.0 and to_t(2500) < 226.0 and to_step(-5.0) < 1
    for x in (-5.0, 0.0, 55.0, 226.0, 300.0):
        assert float(to_t(to_step(x))) == pytest.approx(x)


def test_without_matplotlib_a_plot_is_one_line(tiny_run, monkeypatch, capsys):
    from pgolf.plots import plot_run

    for mod in ("matplotlib", "matplotlib.figure"):
        monkeypatch.setitem(sys.modules, mod, None)
    assert plot_run(tiny_run[0], tiny_run[0] / "none.png") is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "pip install 'pgolf[plot]'" in err[0]
    assert main(["plot", str(tiny_run[0])]) == 2
