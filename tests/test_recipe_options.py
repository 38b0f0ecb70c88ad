"""tools/parse_options.sh checks values before any work: integers where the default is an
integer (or the comment says "(integer)"), true/false where it is a boolean, and
stage <= stop_stage; each error is one line naming the option and the value."""

from __future__ import annotations

import shutil

import pytest
from recipe_helpers import ROOT, Recipe

RECIPES = {"mini": (), "vctk": ("--vctk_root", "/c/vctk"),
           "voxceleb/v2_lap": ("--vox1_root", "/c/v1", "--vox2_root", "/c/v2",
                               "--musan_root", "/c/m", "--rirs_root", "/c/r")}


def _recipe(tmp_path, rel: str) -> Recipe:
    where = ("--workdir", str(tmp_path / "w")) if rel == "mini" else (
        "--data", str(tmp_path / "data"), "--exp", str(tmp_path / "exp"))
    return Recipe(tmp_path, rel, *RECIPES[rel], *where)


def _assert_refused(proc, commands, message: str) -> None:
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line
    assert message in proc.stderr, proc.stderr
    assert commands == [] and "Stage" not in proc.stdout  # before any work
    assert "integer expression expected" not in proc.stderr


BAD = [
    ("mini", ("--stage", "abc"), "option --stage takes an integer, got 'abc'"),
    ("vctk", ("--stage", "abc"), "option --stage takes an integer, got 'abc'"),
    ("voxceleb/v2_lap", ("--stage", "abc"), "option --stage takes an integer, got 'abc'"),
    ("voxceleb/v2_lap", ("--stop_stage=9x",), "option --stop_stage takes an integer, got '9x'"),
    ("mini", ("--stage", "5", "--stop_stage", "2"), "--stage 5 comes after --stop_stage 2"),
    ("vctk", ("--stage", "5", "--stop_stage", "2"), "--stage 5 comes after --stop_stage 2"),
    ("voxceleb/v2_lap", ("--stage", "10", "--stop_stage", "9"),
     "--stage 10 comes after --stop_stage 9"),
    ("mini", ("--quick=maybe",), "option --quick takes true or false, got 'maybe'"),
    ("mini", ("--quick", "1"), "option --quick takes true or false, got '1'"),
    ("voxceleb/v2_lap", ("--evaluate", "no"), "option --evaluate takes true or false, got 'no'"),
    ("mini", ("--train_seed", "x"), "option --train_seed takes an integer, got 'x'"),
    ("mini", ("--seed", "1.5"), "option --seed takes an integer, got '1.5'"),
    ("mini", ("--scale", "0"), "option --scale takes an integer of at least 1, got '0'"),
    ("mini", ("--scale", "1.5"), "option --scale takes an integer, got '1.5'"),
    ("mini", ("--precision", "fp16"),
     "option --precision takes float32, bfloat16 or auto, got 'fp16'"),
    ("vctk", ("--top_n", ""), "option --top_n takes an integer, got ''"),
    ("voxceleb/v2_lap", ("--num_utts_per_shard", "1e3"),
     "option --num_utts_per_shard takes an integer, got '1e3'"),
]


@pytest.mark.parametrize(("rel", "opts", "message"), BAD,
                         ids=[f"{r}:{' '.join(o)}" for r, o, _ in BAD])
def test_recipe_refuses_bad_values_before_any_work(tmp_path, rel, opts, message):
    proc, commands = _recipe(tmp_path, rel).run(*opts)
    _assert_refused(proc, commands, message)
    assert proc.stderr.startswith(f"{_recipe_path(tmp_path, rel)}: ")


def _recipe_path(tmp_path, rel: str) -> str:
    return str(tmp_path / "repo" / "examples" / rel / "run.sh")


GOOD = [
    ("mini", ("--quick", "--stop_stage", "1")),
    ("mini", ("--quick=false", "--train_seed", "", "--stop_stage", "1")),
    ("mini", ("--train_seed", "-3", "--stop_stage", "1")),
    ("vctk", ("--stage", "2", "--stop_stage", "2")),
    ("voxceleb/v2_lap", ("--stop_stage", "1", "--evaluate", "false", "--gpus", "")),
]


@pytest.mark.parametrize(("rel", "opts"), GOOD, ids=[f"{r}:{' '.join(o)}" for r, o in GOOD])
def test_recipe_takes_good_values(tmp_path, rel, opts):
    proc, commands = _recipe(tmp_path, rel).run(*opts)
    assert proc.returncode == 0, proc.stderr
    assert commands


TOOLS = [
    ("average_model.sh", ("--exp_dir", "e", "--num_avg", "abc"),
     "option --num_avg takes an integer, got 'abc'"),
    ("extract_embeddings.sh", ("--exp_dir", "e", "--num_avg", "two", "d"),
     "option --num_avg takes an integer, got 'two'"),
    ("extract_embeddings.sh", ("--exp_dir", "e", "--layer_scores", "yes", "d"),
     "option --layer_scores takes true or false, got 'yes'"),
    ("extract_embeddings.sh", ("--exp_dir", "e", "--num_workers=", "d"),
     "option --num_workers takes an integer, got ''"),
    ("extract_embeddings.sh", ("--exp_dir", "e", "--utts_per_spk", "four", "d"),
     "option --utts_per_spk takes an integer, got 'four'"),
    ("train.sh", ("--config", "c.yaml", "--exp_dir", "e", "--num_nodes", "two"),
     "option --num_nodes takes an integer, got 'two'"),
    ("score_norm.sh", ("--exp_dir", "e", "--eval_set", "t", "--cohort_set", "c",
                       "--top_n", "many", "trials"),
     "option --top_n takes an integer, got 'many'"),
    ("calibrate.sh", ("--exp_dir", "e", "--top_n", "3.5"),
     "option --top_n takes an integer, got '3.5'"),
]


@pytest.mark.parametrize(("tool", "opts", "message"), TOOLS,
                         ids=[f"{t}:{' '.join(o)}" for t, o, _ in TOOLS])
def test_tool_refuses_bad_values_before_any_work(tmp_path, tool, opts, message):
    proc, commands = Recipe(tmp_path, "mini").run_tool(tool, *opts)
    _assert_refused(proc, commands, message)


def test_tool_takes_an_empty_tagged_integer(tmp_path):
    exp = tmp_path / "e" / "models"
    exp.mkdir(parents=True)
    (exp / "model_1.pt").write_text("")
    proc, commands = Recipe(tmp_path, "mini").run_tool(
        "average_model.sh", "--exp_dir", str(tmp_path / "e"), "--num_avg", "")
    # the empty value is taken: num_avg is then read from the config (by python, faked here)
    assert proc.returncode == 0, proc.stderr
    assert commands and "config.yaml" in commands[0]


@pytest.mark.parametrize("probe, quick, steps, epochs, amp", [
    ("bfloat16", False, None, None, "true"),
    ("float32", False, "1900", "5", "false"),
    ("float32", True, "250", "10", "false"),
])
def test_mini_precision_comes_from_one_probe_and_sets_the_sizes(tmp_path, monkeypatch, probe,
                                                                 quick, steps, epochs, amp):
    """--precision auto asks bin.probe_precision once; every stage then runs in its answer,
    and float32 gets the sizes that fit the same time (1,900 steps, 5 epochs)."""
    monkeypatch.setenv("FAKE_PRECISION", probe)
    opts = ("--stop_stage", "3") + (("--quick",) if quick else ())
    recipe = _recipe(tmp_path, "mini")
    shutil.copytree(ROOT / "examples" / "mini" / "conf", recipe.dir / "conf")
    shutil.copy(recipe.bin / "python", recipe.bin / "torchrun")  # stage 3 logs its command
    (tmp_path / "w" / ("exp_quick" if quick else "exp") / "lap_astp").mkdir(parents=True)
    proc, commands = recipe.run(*opts)
    assert proc.returncode == 0, proc.stderr
    assert sum("probe_precision" in c for c in commands) == 1
    pre = next(c.split() for c in commands if "bin.pretrain_ssl" in c)
    train = next(c.split() for c in commands if "bin.train" in c)
    assert pre[pre.index("--dtype") + 1] == probe
    assert (pre[pre.index("--steps") + 1] if "--steps" in pre else None) == steps
    assert train[train.index("--enable_amp") + 1] == amp
    assert train[train.index("--frontend_args.dtype") + 1] == probe
    assert (train[train.index("--num_epochs") + 1] if "--num_epochs" in train else None) == epochs
    # the feature cache of the configs runs in bfloat16 only (float32 and --quick: none)
    cache = train[train.index("--feature_cache_epochs") + 1] if "--feature_cache_epochs" in \
        train else None
    assert cache == (None if probe == "bfloat16" and not quick else "0")


def test_mini_explicit_precision_runs_no_probe(tmp_path):
    proc, commands = _recipe(tmp_path, "mini").run("--stop_stage", "2", "--precision", "float32")
    assert proc.returncode == 0, proc.stderr
    assert not any("probe_precision" in c for c in commands)
    assert any("--dtype float32" in c for c in commands if "bin.pretrain_ssl" in c)


@pytest.mark.parametrize("precision", ["bfloat16", "float32"])
def test_mini_scale_multiplies_speakers_and_steps_in_their_own_dirs(tmp_path, precision):
    """--scale N: N x the training speakers (synth_corpus --train_scale) and the pre-training
    steps (pretrain_ssl --steps_scale, over float32's 1,900 or the config's), written to
    corpus_xN/ and exp_xN/ beside the 1x run's."""
    proc, commands = _recipe(tmp_path, "mini").run("--stop_stage", "2", "--scale", "4",
                                                   "--precision", precision)
    assert proc.returncode == 0, proc.stderr
    corpus = next(c.split() for c in commands if c.startswith("make_corpus"))
    assert corpus[1] == str(tmp_path / "w" / "corpus_x4")
    assert corpus[corpus.index("--train_scale") + 1] == "4"
    pre = next(c.split() for c in commands if "bin.pretrain_ssl" in c)
    assert pre[pre.index("--steps_scale") + 1] == "4"
    assert pre[pre.index("--out") + 1] == str(tmp_path / "w" / "exp_x4" / "ssl")
    assert ("--steps" in pre) == (precision == "float32")
    # scale 1 (the default) passes neither and keeps the plain names
    proc, commands = _recipe(tmp_path / "one", "mini").run("--stop_stage", "2")
    assert proc.returncode == 0, proc.stderr
    assert not any("--train_scale" in c or "--steps_scale" in c for c in commands)
    assert any(str(tmp_path / "one" / "w" / "corpus") + " " in c for c in commands)
