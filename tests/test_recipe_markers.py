"""Recipes' done-markers (tools/stage_marker.sh): a step is skipped only when it ran with the
same options; changed options redo it with a log line naming them; a killed step is redone
alone; an empty marker of the recipes before options were recorded is honoured.

The recipes run as copies with fake commands (tests/recipe_helpers.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from recipe_helpers import ROOT, Recipe

MARKER_TOOL = ROOT / "tools" / "stage_marker.sh"

# the VoxCeleb recipe's stage-1 steps, in order, by a piece of their command line
VOX_STEPS = {
    "decode": "prepare_voxceleb.py decode",
    "vox2_dev": "prepare_voxceleb.py data --ext flac",
    "vox1": "prepare_voxceleb.py data --ext wav",
    "validate": "validate_data_dir",
    "trials": "prepare_voxceleb.py trials",
    "cal_trials": "prepare_voxceleb.py cal_trials",
    "musan_rirs": "prepare_musan_rirs.py",
    "valid": "prepare_voxceleb.py valid",
}


def ran(commands: list[str], steps: dict[str, str] = VOX_STEPS) -> list[str]:
    """The steps whose command lines are among ``commands``."""
    return [name for name, key in steps.items() if any(key in c for c in commands)]


@pytest.fixture
def vox(tmp_path):
    recipe = Recipe(tmp_path, "voxceleb/v2_lap", "--vox1_root", "/c/vox1", "--vox2_root",
                    "/c/vox2", "--musan_root", "/c/musan", "--rirs_root", "/c/rirs",
                    "--data", str(tmp_path / "data"), "--stop_stage", "2")
    recipe.data = tmp_path / "data"
    return recipe


# ------------------------------------------------------------------ the shell functions
def shell(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"set -euo pipefail; . {MARKER_TOOL}; {script}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=30)


def test_marker_records_options_and_is_written_atomically(tmp_path):
    r = shell("stage_done_with d/m.done 'seed=7' 'opts=--a b'; "
              "stage_is_done d/m.done 'opts=--a b' seed=7 && echo same", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "same"  # options in another order: still the same step
    assert (tmp_path / "d" / "m.done").read_text().splitlines()[1:] == ["seed=7", "opts=--a b"]
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["m.done"]  # no temporary left


def test_changed_option_is_named_and_the_stale_marker_removed(tmp_path):
    r = shell("stage_done_with m seed=7 n=1; stage_is_done m seed=8 n=1 || echo redo", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "m: redoing the step, options changed since it was done: seed ('7' -> '8')" in r.stdout
    assert r.stdout.strip().endswith("redo") and not (tmp_path / "m").exists()


def test_new_and_dropped_options_count_as_changes(tmp_path):
    r = shell("stage_done_with m a=1; stage_is_done m b=2 || echo redo", tmp_path)
    assert "b (not recorded -> '2')" in r.stdout and "a ('1' -> no longer an option)" in r.stdout
    assert r.stdout.strip().endswith("redo")


def test_missing_marker_is_not_done_and_silent(tmp_path):
    r = shell("stage_is_done m a=1 || echo todo", tmp_path)
    assert r.stdout.strip() == "todo"


def test_empty_legacy_marker_is_done_with_a_log_line(tmp_path):
    (tmp_path / "m").touch()
    (tmp_path / "old").touch()
    r = shell("stage_is_done m a=1 && stage_is_done --legacy old new a=1 && echo done", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("written before markers recorded their options; taken as done") == 2
    assert "(stage marker) old:" in r.stdout and r.stdout.strip().endswith("done")
    # a legacy path that holds a marker of today's kind vouches for nothing else
    r = shell("stage_done_with old a=1; stage_is_done --legacy old new a=1 || echo todo",
              tmp_path)
    assert r.stdout.strip() == "todo"


@pytest.mark.parametrize("bad", ["seed", "=7", "1x=2", "a=b\nc=d"])
def test_options_must_be_name_value_lines(tmp_path, bad):
    for fn in ("stage_done_with", "stage_is_done"):
        r = subprocess.run(["bash", "-c", f'. {MARKER_TOOL}; {fn} m "$1"; echo after', "x",
                            bad], capture_output=True, text=True, cwd=tmp_path, timeout=30)
        assert r.returncode == 1 and "after" not in r.stdout
        assert f"{fn}: option" in r.stderr and "is not name=value" in r.stderr


# ------------------------------------------------------------------ the recipes
def test_voxceleb_rerun_skips_and_a_seed_change_redoes_what_it_shapes(vox):
    r, cmds = vox.run()
    assert r.returncode == 0, r.stderr
    assert ran(cmds) == list(VOX_STEPS)
    assert any("make_shard_list" in c for c in cmds)
    r, cmds = vox.run()
    assert r.returncode == 0, r.stderr
    assert cmds == [] and "redoing" not in r.stdout  # unchanged options: all skipped

    r, cmds = vox.run("--seed", "778")
    assert r.returncode == 0, r.stderr
    assert ran(cmds) == ["cal_trials", "valid"]  # the validation speakers too
    assert [c for c in cmds if "make_shard_list" in c]  # the shards' order too
    assert not [c for c in cmds if "--type rir" in c]
    assert "/data/.prep.cal_trials.done: redoing the step, options changed since it was " \
           "done: seed ('777' -> '778')" in r.stdout
    assert "/data/.lists_shard_vox2_train.done: redoing the step, options changed since it " \
           "was done: split_seed ('777' -> '778'), seed ('777' -> '778')" in r.stdout


def test_voxceleb_shard_size_and_list_type_changes_redo_the_lists(vox):
    assert vox.run()[0].returncode == 0
    r, cmds = vox.run("--stage", "2", "--num_utts_per_shard", "500")
    assert r.returncode == 0, r.stderr
    assert len(cmds) == 1 and "--num_utts_per_shard 500" in cmds[0]
    assert "num_utts_per_shard ('1000' -> '500')" in r.stdout
    r, cmds = vox.run("--stage", "2", "--data_type", "raw")  # a list of its own kind
    assert r.returncode == 0, r.stderr
    assert len(cmds) == 1 and "make_raw_list" in cmds[0] and "raw.list" in cmds[0]
    r, cmds = vox.run("--stage", "2", "--data_type", "raw")
    assert r.returncode == 0 and cmds == []
    r, cmds = vox.run("--stage", "2", "--num_utts_per_shard", "500")  # both kinds kept
    assert r.returncode == 0 and cmds == []


def test_voxceleb_killed_sixth_step_is_redone_alone(vox):
    r, cmds = vox.run("--stop_stage", "1", fail="cal_trials")
    assert r.returncode != 0
    assert ran(cmds) == list(VOX_STEPS)[:6]
    data = vox.data
    assert sorted(p.name for p in data.glob(".prep.*.done")) == sorted(
        f".prep.{s}.done" for s in list(VOX_STEPS)[:5])
    r, cmds = vox.run("--stop_stage", "1")
    assert r.returncode == 0, r.stderr
    assert ran(cmds) == ["cal_trials", "musan_rirs", "valid"]
    # a marker lost for step 6 only (as if killed between its work and its marker)
    (data / ".prep.cal_trials.done").unlink()
    r, cmds = vox.run("--stop_stage", "1")
    assert r.returncode == 0, r.stderr
    assert ran(cmds) == ["cal_trials"]


def test_voxceleb_markers_of_the_recipe_before_options_are_honoured(vox):
    data = vox.data
    data.mkdir()
    (data / ".prep.done").touch()
    (data / ".lists_shard.done").touch()
    # the recipe before validation trained on all of vox2_dev: so does --num_valid_speakers 0
    r, cmds = vox.run("--num_valid_speakers", "0")
    assert r.returncode == 0, r.stderr
    assert cmds == []
    lines = [x for x in r.stdout.splitlines() if "written before markers recorded" in x]
    assert len(lines) == 9  # seven stage-1 steps, the shard list, the MUSAN/RIR lists
    assert all(x.endswith("taken as done (delete it to redo the step with the current "
                          "options)") for x in lines)
    # a new list type is made, and then no longer vouched for by the old marker
    r, cmds = vox.run("--stage", "2", "--data_type", "raw", "--num_valid_speakers", "0")
    assert r.returncode == 0, r.stderr
    assert ran(cmds, {"raw": "raw.list", "musan": "musan.list"}) == ["raw", "musan"]
    # with validation (the default) the split and the lists of its training set are new work
    r, cmds = vox.run()
    assert r.returncode == 0, r.stderr
    assert ran(cmds) == ["valid"] and any("vox2_train/shard.list" in c for c in cmds)


def test_voxceleb_stage_1_checks_every_corpus_only_when_work_is_left(vox, tmp_path):
    r, _ = vox.run("--stop_stage", "1")
    assert r.returncode == 0, r.stderr
    bare = Recipe(tmp_path / "bare", "voxceleb/v2_lap", "--data", str(tmp_path / "data"))
    r, cmds = bare.run("--stop_stage", "1")
    assert r.returncode == 0 and cmds == [], r.stderr  # all done: no corpus needed
    (tmp_path / "data" / ".prep.musan_rirs.done").unlink()
    r, cmds = bare.run("--stop_stage", "1")
    assert r.returncode != 0 and cmds == []
    assert "stage 1 needs --vox1_root" in r.stderr


def test_voxceleb_stages_8_and_9_are_written_out():
    text = (ROOT / "examples" / "voxceleb" / "v2_lap" / "run.sh").read_text()
    for n in range(1, 11):
        assert f'if [ "$stage" -le {n} ] && [ "$stop_stage" -ge {n} ]' in text


@pytest.mark.parametrize("rel", ["mini", "vctk", "voxceleb/v2_lap"])
def test_no_recipe_computes_stage_numbers_or_touches_markers(rel):
    text = (ROOT / "examples" / rel / "run.sh").read_text()
    assert not re.search(r"\$\(\([^)]*\b(stage|phase)\b", text)
    assert "this_stage" not in text and "for phase" not in text
    assert not re.search(r"\btouch\b", text)  # every marker goes through stage_done_with


def test_vctk_steps_and_augmentation_lists_follow_their_options(tmp_path):
    vctk = Recipe(tmp_path, "vctk", "--vctk_root", "/c/vctk", "--data", str(tmp_path / "data"),
                  "--stop_stage", "2")
    steps = {"protocol": "prepare_vctk.py", "validate": "validate_data_dir",
             "musan_rirs": "prepare_musan_rirs.py", "list": "make_raw_list /",
             "musan_list": "musan.list"}
    r, cmds = vctk.run()
    assert r.returncode == 0, r.stderr
    assert ran(cmds, steps) == ["protocol", "validate", "list"]  # no noise corpora given
    r, cmds = vctk.run("--musan_root", "/c/musan")
    assert r.returncode == 0, r.stderr
    assert ran(cmds, steps) == ["musan_rirs", "musan_list"]
    assert "musan ('' -> 'given')" in r.stdout
    r, cmds = vctk.run("--musan_root", "/c/musan", "--split", "0.8,0.1,0.1")
    assert r.returncode == 0, r.stderr
    assert ran(cmds, steps) == ["protocol", "validate", "list"]
    assert "split ('0.6,0.2,0.2' -> '0.8,0.1,0.1')" in r.stdout
    r, cmds = vctk.run("--musan_root", "/c/musan", "--split", "0.8,0.1,0.1")
    assert r.returncode == 0 and cmds == []


def test_mini_markers_follow_seed_and_quick(tmp_path):
    mini = Recipe(tmp_path, "mini", "--workdir", str(tmp_path / "w"), "--stop_stage", "2",
                  "--precision", "bfloat16")
    r, cmds = mini.run()
    assert r.returncode == 0, r.stderr
    assert [c.split()[0] for c in cmds if c.startswith("make_corpus")] == ["make_corpus"]
    assert any("pretrain_ssl" in c for c in cmds)
    r, cmds = mini.run()
    assert r.returncode == 0 and cmds == [], r.stdout
    r, cmds = mini.run("--pretrain_minutes", "5")
    assert r.returncode == 0, r.stderr
    assert len(cmds) == 1 and "pretrain_ssl" in cmds[0] and "--max_minutes 5" in cmds[0]
    assert "pretrain_minutes ('' -> '5')" in r.stdout
    r, cmds = mini.run("--pretrain_minutes", "5", "--seed", "8")
    assert r.returncode == 0, r.stderr
    assert cmds[0].startswith("make_corpus") and "--seed 8" in cmds[0]
    assert any("pretrain_ssl" in c for c in cmds) and any("make_shard_list" in c for c in cmds)
    assert "seed ('7' -> '8')" in r.stdout
    # the recipe before options were recorded: empty markers, honoured
    for m in (tmp_path / "w").rglob(".*done"):
        m.write_text("")
    (tmp_path / "w" / "corpus" / ".validate.done").unlink()
    r, cmds = mini.run()
    assert r.returncode == 0 and cmds == [], r.stdout
    assert r.stdout.count("written before markers recorded their options") == 4


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_marker_tool_and_recipes_pass_shellcheck():
    scripts = [ROOT / "tools" / "stage_marker.sh"] + [
        ROOT / "examples" / rel / "run.sh" for rel in ("mini", "vctk", "voxceleb/v2_lap")]
    for script in scripts:
        r = subprocess.run(["shellcheck", "-x", script.name], capture_output=True, text=True,
                           cwd=script.parent)
        assert r.returncode == 0, r.stdout


def test_mini_precision_change_redoes_the_corpus_and_the_pretraining(tmp_path):
    """float32 runs the earlier default's sizes, 300 training speakers among them: the
    corpus, its lists and the SSL model are redone, with log lines naming why."""
    mini = Recipe(tmp_path, "mini", "--workdir", str(tmp_path / "w"), "--stop_stage", "2")
    r, cmds = mini.run("--precision", "bfloat16")
    assert r.returncode == 0, r.stderr
    assert "--num_train_spk" not in cmds[0]
    r, cmds = mini.run("--precision", "float32")
    assert r.returncode == 0, r.stderr
    assert cmds[0].startswith("make_corpus") and "--num_train_spk 300" in cmds[0]
    assert any("pretrain_ssl" in c and "--dtype float32" in c for c in cmds)
    assert "synth ('' -> '--num_train_spk 300')" in r.stdout
    r, cmds = mini.run("--precision", "float32")  # and then nothing is redone
    assert r.returncode == 0 and cmds == [], (r.stderr, cmds)
