"""The mini recipe, stages 1-7 at --quick size: CI's end-to-end integration test, with its
model package checked against the recipe's scores and the top README's snippets run on it.

``WESPEAKER_LAP_QUICK_WORKDIR=/tmp/q pytest -m slow tests/test_mini_recipe.py`` runs (or
resumes: finished stages are skipped) the recipe in that directory instead of a fresh one."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wespeaker_lap.api import load_model
from wespeaker_lap.scoring.metrics import compute_metrics
from wespeaker_lap.scoring.score import read_scores

ROOT = Path(__file__).resolve().parents[1]
# %, AS-norm EER ceilings of --quick (360 trials, 12 speakers per set). Measured on the
# quiet 2-core machine (examples/mini/README.md): 28.3 in-domain [95 % speaker-bootstrap
# interval 20.0-36.1], 32.2 unseen-voice [23.9-37.9]; the ceilings sit at the intervals'
# upper ends. A pre-training that stays at chance (the masked-only loss) gave 41 / 35,
# and a backend that does not learn gives about 45.
QUICK_EER_CEILING = 36.0
QUICK_UNSEEN_EER_CEILING = 40.0
RECIPE = ROOT / "examples" / "mini" / "run.sh"

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="the mini corpus needs espeak-ng"
)


def run_recipe(workdir: Path, *opts: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(["bash", str(RECIPE), "--quick", "--workdir", str(workdir), *opts],
                          capture_output=True, text=True, env=env, timeout=1800)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """(workdir, the run's CompletedProcess) of one --quick run shared by the slow tests."""
    given = os.environ.get("WESPEAKER_LAP_QUICK_WORKDIR")
    workdir = Path(given) if given else tmp_path_factory.mktemp("mini_quick")
    return workdir, run_recipe(workdir)


@pytest.mark.slow
def test_quick_recipe_runs_stages_1_to_7_and_learns_something(quick):
    tmp_path, r = quick
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    for stage in range(1, 8):
        assert f"Stage {stage}:" in r.stdout
    corpus, exp = tmp_path / "corpus_quick", tmp_path / "exp_quick" / "lap_astp"
    assert (corpus / ".done").is_file() and (corpus / "data" / ".lists.done").is_file()
    assert (tmp_path / "exp_quick" / "ssl" / "config.json").is_file()
    assert (exp / "config.yaml").is_file() and (exp / "models" / "avg_model.pt").is_file()
    for x in ("test", "train", "valid"):
        assert (exp / "embeddings" / x / "xvector.scp").is_file()
        assert (exp / "embeddings" / x / "mean_vec.npy").is_file()
    metrics = json.loads((exp / "scores" / "metrics.json").read_text())
    assert len(metrics) == 2  # cosine and AS-norm
    for m in metrics.values():
        assert m["n_target"] > 0 and m["n_nontarget"] > 0
    # speaker-bootstrap intervals on both test sets (in-domain and unseen voices)
    ci = json.loads((exp / "scores" / "metrics_ci.json").read_text())
    by = {(m["set"], m["scoring"]): m for m in ci.values()}
    assert ("test", "AS-norm") in by and ("test", "cosine") in by
    for m in by.values():
        assert m["eer_ci"][0] <= m["eer"] <= m["eer_ci"][1]
    # a regression guard on learning quality (see the ceilings' comment)
    assert 100 * by[("test", "AS-norm")]["eer"] < QUICK_EER_CEILING, by
    if ("test_unseen", "AS-norm") in by:
        assert 100 * by[("test_unseen", "AS-norm")]["eer"] < QUICK_UNSEEN_EER_CEILING, by
    assert (exp / "scores" / "det.png").stat().st_size > 0
    assert (exp / "layer_attention.png").stat().st_size > 0
    # validated on data/valid every epoch; the average took the best-validated epochs
    epochs = [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()]
    epochs = [e for e in epochs if e["kind"] == "epoch"]
    assert len(epochs) == 10 and all("eer" in e["valid"] for e in epochs)
    assert "--select best_valid" in r.stderr
    assert (exp / "training.png").stat().st_size > 0 and (exp / "layer_use.png").stat().st_size
    table = (exp / "results.md").read_text().splitlines()
    assert len(table) == 4 and "AS-norm" in table[-1]
    breakdown = (exp / "results_breakdown.md").read_text()
    for row in ("| test | all trials |", "| test | both sides clean |",
                "| test | targets vs non-targets of other source voices |"):
        assert row in breakdown, breakdown
    # pre-training ran its 250 steps, drew its curve, and learned: the masked frames'
    # loss of the last 20 steps is below the unigram entropy, the best a model that
    # ignores the audio can do (measured: 4.38 against 4.54; chance ln K = 4.61)
    ssl = tmp_path / "exp_quick" / "ssl"
    assert (ssl / "pretrain_curve.png").stat().st_size > 0
    text = (ssl / "pretrain_log.tsv").read_text()
    log = [line.split("\t") for line in text.splitlines() if line[:1].isdigit()]
    assert len(log) == 250 and all(0.0 <= float(r[2]) <= 1.0 for r in log)
    unigram = float(text.split("unigram entropy ")[1].split(",")[0])
    assert sum(float(r[1]) for r in log[-20:]) / 20 < unigram, (log[-20:], unigram)
    # the per-stage time table
    assert "| 2 lists + SSL pre-training |" in r.stdout and "| total |" in r.stdout

    # re-running finished stages is a no-op that keeps the outputs
    stamp = (corpus / "data" / "train" / "wav.scp").stat().st_mtime_ns
    r = run_recipe(tmp_path, "--stop_stage", "3")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert (corpus / "data" / "train" / "wav.scp").stat().st_mtime_ns == stamp
    assert "torchrun" not in r.stdout and "epoch 1" not in r.stderr


def _asnorm_metrics(exp: Path) -> dict:
    """The recipe's AS-norm figures of the in-domain test set (stage 6's metrics.json)."""
    metrics = json.loads((exp / "scores" / "metrics.json").read_text())
    (key,) = [k for k in metrics if ".asnorm" in Path(k).name]
    return {"file": key, **metrics[key]}


@pytest.mark.slow
def test_quick_package_scores_the_test_trials_to_the_recipes_asnorm_eer(quick):
    """The issue's "done when": the package, embedding the test audio and scoring the trials
    through model.score, gives stage 6's AS-norm EER exactly."""
    workdir, r = quick
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    exp, data = workdir / "exp_quick" / "lap_astp", workdir / "corpus_quick" / "data"
    pkg = exp / "package"
    meta = json.loads((pkg / "package.json").read_text())
    assert meta["thresholds"]["trials"]["name"] == "valid" and meta["calibration"]
    # the recipe's top_n 100 is cut to the 40 training speakers of the --quick cohort
    assert meta["ssl"]["source"] == "bundled" and meta["score_norm"]["top_n"] == 40
    assert "top_n 100 is more than the 40 training speakers; top 40" in r.stdout
    assert [t["name"] for t in meta["test_sets"]][0] == "test"
    card = (pkg / "README.md").read_text()
    assert "[95% CI]" in card and "## The thresholds on the test sets" in card
    recipe = _asnorm_metrics(exp)
    trials, recipe_scores = read_scores(recipe["file"], require_labels=True)
    wavs = dict(line.split() for line in (data / "test" / "wav.scp").read_text().splitlines())
    model = load_model(pkg)
    keys = sorted(set(trials.enroll) | set(trials.test))
    table = dict(zip(keys, model.embed([wavs[k] for k in keys]), strict=True))
    ours = model.score(np.stack([table[k] for k in trials.enroll]),
                       np.stack([table[k] for k in trials.test]))
    np.testing.assert_allclose(ours, recipe_scores, atol=1e-4, rtol=0)
    assert compute_metrics(ours, trials.labels)["eer"] == recipe["eer"]


def _readme_block(lang: str, containing: str) -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)
    (block,) = [b for b in blocks if containing in b]
    return block


def _on_quick_run(code: str, workdir: Path) -> str:
    """The README's paths (default run) -> the --quick run's in ``workdir``."""
    for default, quick_dir in (("examples/mini/exp/", "exp_quick/"),
                               ("examples/mini/corpus/", "corpus_quick/")):
        assert default in code, (default, code)
        code = code.replace(default, f"{workdir}/{quick_dir}")
    return code


@pytest.mark.slow
def test_the_readmes_python_and_cli_lines_run_on_the_quick_package(quick):
    workdir, r = quick
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    code = _on_quick_run(_readme_block("python", "load_model("), workdir)
    assert len(code.strip().splitlines()) == 5
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 and all(" llr " in x and "measured on valid" in x for x in lines)
    cli = _on_quick_run(_readme_block("bash", "wespeaker-lap verify --model"), workdir)
    res = subprocess.run(["bash", "-euc", cli], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    assert " llr " in res.stdout and "measured on valid" in res.stdout
    assert res.stdout.strip().splitlines()[-1] == lines[0].splitlines()[-1], (res.stdout, lines)


def test_unknown_recipe_option_fails_with_the_valid_ones(tmp_path):
    r = run_recipe(tmp_path, "--stgae", "3")
    assert r.returncode != 0
    assert "unknown option --stgae" in r.stderr and "--stage" in r.stderr


def _fake_scores(path: Path, utt2spk: Path, seed: int, shift: float) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    utts = [f"s{s}-{u}" for s in range(8) for u in range(5)]
    utt2spk.write_text("".join(f"{u} {u.split('-')[0]}\n" for u in utts))
    lines = []
    for i, a in enumerate(utts):
        for b in utts[i + 1 :]:
            tgt = a.split("-")[0] == b.split("-")[0]
            lines.append(f"{a} {b} {shift * tgt + rng.normal():.4f} "
                         f"{'target' if tgt else 'nontarget'}\n")
    path.write_text("".join(lines))


def test_score_ci_and_compare_table_summarise_seeds(tmp_path):
    import subprocess
    import sys

    local = ROOT / "examples" / "mini" / "local"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    dirs = []
    for seed in (1, 2):
        d = tmp_path / f"lap_astp_seed{seed}"
        (d / "scores").mkdir(parents=True)
        _fake_scores(d / "scores" / "t.score", tmp_path / "utt2spk", seed, 2.0)
        r = subprocess.run([sys.executable, str(local / "score_ci.py"), "--num_boot", "50",
                            "--json", str(d / "scores" / "metrics_ci.json"), "--set", "test",
                            str(tmp_path / "utt2spk"), str(d / "scores" / "t.score")],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        assert "| test | cosine | 780 | 8 |" in r.stdout
        dirs.append(str(d))
    r = subprocess.run([sys.executable, str(local / "compare_table.py"), *dirs],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    row = [line for line in r.stdout.splitlines() if line.startswith("| lap_astp |")]
    assert len(row) == 1 and "| 2 |" in row[0] and "+-" in row[0]


def test_trial_breakdown_finds_the_hard_subset(tmp_path):
    """Non-targets of one source voice score high: their row's EER is the bad one."""
    import subprocess
    import sys

    import numpy as np

    rng = np.random.default_rng(0)
    spks = {f"spk{i}": ("flite", "rms" if i < 4 else "awb") for i in range(8)}
    (tmp_path / "speakers.tsv").write_text(
        "spk\tset\tengine\tvoice\tvariant\n"
        + "".join(f"{s}\ttest\t{e}\t{v}\t-\n" for s, (e, v) in spks.items()))
    data = tmp_path / "test"
    data.mkdir()
    utts = [f"{s}-{u}" for s in spks for u in range(4)]
    (data / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in utts))
    (data / "utt2channel").write_text(
        "".join(f"{u} {'clean' if i % 2 else 'reverb'}\n" for i, u in enumerate(utts)))
    lines = []
    for i, a in enumerate(utts):
        for b in utts[i + 1:]:
            sa, sb = a.split("-")[0], b.split("-")[0]
            same_voice = spks[sa][1] == spks[sb][1]
            s = 3.0 if sa == sb else (2.5 if same_voice else 0.0)
            lines.append(f"{a} {b} {s + 0.5 * rng.normal():.4f} "
                         f"{'target' if sa == sb else 'nontarget'}\n")
    (tmp_path / "s.score").write_text("".join(lines))

    def breakdown(*opts: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(ROOT / "examples/mini/local/trial_breakdown.py"),
             "--speakers", str(tmp_path / "speakers.tsv"), *opts,
             "--set", "test", str(data), str(tmp_path / "s.score")],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})

    r = breakdown("--min_nontargets", "10")
    assert r.returncode == 0, r.stderr
    eer = {line.split(" | ")[1]: float(line.split(" | ")[4].rstrip(" |"))
           for line in r.stdout.splitlines()[2:]}
    assert eer["targets vs non-targets of other source voices"] < 1.0
    assert eer["targets vs non-targets of the same source voice"] > 20.0
    assert eer["within flite:rms"] > 20.0 and eer["within flite:awb"] > 20.0
    assert {"both sides clean", "one side degraded", "both sides degraded"} <= set(eer)
    # without utt2channel (a corpus from before it): the other rows, no channel rows
    (data / "utt2channel").unlink()
    r = breakdown()
    assert r.returncode == 0 and "utt2channel: missing" in r.stderr, r.stderr
    assert "| test | all trials |" in r.stdout and "clean" not in r.stdout
    # an utterance the data dir does not know is named
    (data / "utt2channel").write_text("spk0-0 clean\n")
    r = breakdown()
    assert r.returncode != 0 and "utt2channel" in r.stderr
