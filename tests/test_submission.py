"""Issue 4: packed single file under torchrun, seeds, compare (vs scipy), submit, inspect."""
import json

import pytest

from conftest import run_cli, tiny_overrides
from pgolf import submission as sub
from pgolf.cli import main


def test_t_distribution_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1.0, 2.0, 3.7, 10.0, 57.3):
        for t in (-4.0, -1.0, -0.1, 0.0, 0.3, 1.5, 3.0, 8.0):
            assert sub.t_sf(t, df) == pytest.approx(stats.t.sf(t, df), rel=1e-9, abs=1e-14)


@pytest.mark.parametrize("a,b", [
    ([1.2244, 1.2251, 1.2239], [1.2140, 1.2152, 1.2139]),
    ([2.0700, 2.0712, 2.0695, 2.0703], [2.0601, 2.0650, 2.0622]),
    ([3.0, 3.1, 2.9], [3.0, 2.95, 3.05]),
])
def test_welch_matches_scipy(a, b):
    np = pytest.importorskip("numpy")
    stats = pytest.importorskip("scipy.stats")
    w = sub.welch_one_sided(a, b, margin=0.005)
    ref = stats.ttest_ind(np.array(a) - 0.005, np.array(b), equal_var=False, alternative="greater")
    assert w.t == pytest.approx(ref.statistic, rel=1e-10)
    assert w.p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-14)
    if hasattr(ref, "df"):
        assert w.df == pytest.approx(ref.df, rel=1e-10)


@pytest.fixture(scope="module")
def seed_group(tmp_path_factory, embedded_dir):
    out = tmp_path_factory.mktemp("seeds")
    args = ["seeds", "--recipe", "smoke", "--seeds", "1,2", "--out", str(out), "--name", "grp"]
    for o in tiny_overrides(eval__ttt="false", eval__max_tokens=0):  # submit audits: every val token scored
        args += ["--set", o]
    assert main(args) == 0
    return out / "grp"


def test_seeds_keeps_runs_together(seed_group):
    runs = sorted(p.name for p in seed_group.iterdir())
    assert runs == ["smoke-s1", "smoke-s2"]
    s1 = json.loads((seed_group / "smoke-s1" / "summary.json").read_text())
    s2 = json.loads((seed_group / "smoke-s2" / "summary.json").read_text())
    assert (s1["seed"], s2["seed"]) == (1, 2) and s1["val_bpb"] != s2["val_bpb"]


def test_compare_cli(seed_group, tmp_path, capsys):
    png = tmp_path / "c.png"
    a, b = seed_group / "smoke-s1", seed_group / "smoke-s2"
    assert main(["compare", str(a), str(b), "--", str(seed_group), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "A: n=2" in out and "B: n=2" in out and "Welch" in out and "p=" in out
    assert png.exists() and png.stat().st_size > 1000


def test_compare_plots_into_the_first_groups_folder(seed_group, tmp_path, monkeypatch, capsys):
    """Not into the current folder: the picture sits with the runs it shows."""
    monkeypatch.chdir(tmp_path)
    a, b = seed_group / "smoke-s1", seed_group / "smoke-s2"
    try:
        assert main(["compare", str(seed_group), "--", str(a), str(b)]) == 0
        assert (seed_group / "compare.png").stat().st_size > 1000 and not (tmp_path / "compare.png").exists()
        assert f"plot: {seed_group / 'compare.png'}" in capsys.readouterr().out
        assert sub.default_plot_path([str(a), str(b)]) == seed_group / "compare.png"  # the folder they share
    finally:
        (seed_group / "compare.png").unlink(missing_ok=True)


def test_inspect_totals_equal_file_bytes(seed_group, capsys):
    art = seed_group / "smoke-s1" / "model.pgz"
    rows, total = sub.tensor_table(art)
    assert total == art.stat().st_size == sum(r["bytes"] for r in rows)
    assert {r["fmt"] for r in rows} >= {"int8", "fp32"}
    assert all(r["rel_error"] is not None for r in rows)
    assert main(["inspect", str(art)]) == 0
    out = capsys.readouterr().out
    assert f"{total:,} bytes on disk" in out and "blocks.0.mlp.fc.weight" in out


def test_submit_writes_the_records_folder(seed_group, tmp_path):
    assert main(["submit", str(seed_group), "--name", "Tiny smoke", "--author", "A. Golfer", "--github-id", "golfer",
                 "--out", str(tmp_path)]) == 0
    (folder,) = list(tmp_path.iterdir())
    assert folder.name.endswith("_Tiny_smoke")
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["README.md", "submission.json", "train_gpt.py", "train_seed1.log", "train_seed2.log"]
    meta = json.loads((folder / "submission.json").read_text())
    for k in ("author", "github_id", "name", "blurb", "date", "val_loss", "val_bpb", "bytes_total", "bytes_code"):
        assert k in meta, k
    assert meta["seeds"] == [1, 2] and meta["bytes_code"] == (folder / "train_gpt.py").stat().st_size
    s = [json.loads((seed_group / f"smoke-s{i}" / "summary.json").read_text()) for i in (1, 2)]
    assert meta["val_bpb"] == pytest.approx((s[0]["val_bpb"] + s[1]["val_bpb"]) / 2, abs=1e-8)
    readme = (folder / "README.md").read_text()
    assert "| 1 |" in readme and "| 2 |" in readme and "mean" in readme.lower()


def test_submit_refuses_over_budget(seed_group, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sub, "BUDGET_BYTES", 10_000)
    assert main(["submit", str(seed_group), "--name", "x", "--author", "a", "--github-id", "g",
                 "--out", str(tmp_path)]) == 3  # the exit code of "over budget", for every command
    assert "over the 10,000-byte budget" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


def test_packed_file_under_torchrun_matches_pgolf_train(tmp_path, embedded_dir):
    """pgolf pack --recipe smoke, run the single file with 2 gloo processes, get pgolf train's val_bpb to 1e-6."""
    over = tiny_overrides(eval__ttt="false")
    sets = [a for o in over for a in ("--set", o)]
    script = tmp_path / "train_gpt.py"
    r = run_cli(["-m", "pgolf", "pack", "--recipe", "smoke", *sets, "-o", str(script)])
    assert r.returncode == 0, r.stderr
    env = {"OMP_NUM_THREADS": "1"}
    packed = run_cli(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
                      "--out", str(tmp_path), "--name", "packed"], cwd=tmp_path, env=env)
    assert packed.returncode == 0, packed.stderr[-3000:]
    ref = run_cli(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pgolf", "train",
                   "--recipe", "smoke", *sets, "--out", str(tmp_path), "--name", "ref"], env=env)
    assert ref.returncode == 0, ref.stderr[-3000:]
    sp = json.loads((tmp_path / "packed" / "summary.json").read_text())
    sr = json.loads((tmp_path / "ref" / "summary.json").read_text())
    assert sp["world_size"] == sr["world_size"] == 2
    assert sp["val_bpb"] == pytest.approx(sr["val_bpb"], abs=1e-6)
    assert sp["bytes_code"] == sr["bytes_code"] == script.stat().st_size


def test_minified_pack_is_smaller_and_trains_exactly_as_the_plain_one(tmp_path, embedded_dir):
    """The counted form (minified, compressed) and the readable form run the same program: same losses and
    val_bpb bit for bit (one thread each); minifying is idempotent, so the run keeps the very file it ran."""
    from pgolf.pack import minify, packed_modules

    assert all(minify(minify(s)) == minify(s) for s in packed_modules().values())
    sets = [a for o in tiny_overrides(eval__ttt="false") for a in ("--set", o)]
    files = {}
    for kind, flag in (("small", []), ("plain", ["--plain"])):
        files[kind] = tmp_path / f"{kind}.py"
        r = run_cli(["-m", "pgolf", "pack", "--recipe", "smoke", *sets, *flag, "-o", str(files[kind])])
        assert r.returncode == 0, r.stderr
        r = run_cli([str(files[kind]), "--out", str(tmp_path), "--name", kind], cwd=tmp_path,
                    env={"OMP_NUM_THREADS": "1"})
        assert r.returncode == 0, r.stderr[-2000:]
    assert files["small"].stat().st_size < 0.35 * files["plain"].stat().st_size
    a = json.loads((tmp_path / "small" / "summary.json").read_text())
    b = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert a["val_bpb"] == b["val_bpb"] and a["bytes_model"] == b["bytes_model"]
    assert (tmp_path / "small" / "train_gpt.py").read_bytes() == files["small"].read_bytes()
    assert a["bytes_code"] == files["small"].stat().st_size
