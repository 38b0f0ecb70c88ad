"""The mini recipe, stages 1-6 at --quick size: CI's end-to-end integration test."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "mini" / "run.sh"

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="the mini corpus needs espeak-ng"
)


def run_recipe(workdir: Path, *opts: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(["bash", str(RECIPE), "--quick", "--workdir", str(workdir), *opts],
                          capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_quick_recipe_runs_stages_1_to_6_and_learns_something(tmp_path):
    r = run_recipe(tmp_path)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    for stage in range(1, 7):
        assert f"Stage {stage}:" in r.stdout
    corpus, exp = tmp_path / "corpus_quick", tmp_path / "exp_quick" / "lap_astp"
    assert (corpus / ".done").is_file() and (corpus / "data" / ".lists.done").is_file()
    assert (tmp_path / "exp_quick" / "ssl" / "config.json").is_file()
    assert (exp / "config.yaml").is_file() and (exp / "models" / "avg_model.pt").is_file()
    for x in ("test", "train"):
        assert (exp / "embeddings" / x / "xvector.scp").is_file()
        assert (exp / "embeddings" / x / "mean_vec.npy").is_file()
    metrics = json.loads((exp / "scores" / "metrics.json").read_text())
    assert len(metrics) == 2  # cosine and AS-norm
    for m in metrics.values():
        assert m["n_target"] > 0 and m["n_nontarget"] > 0
        # a trained system beats chance (50%) on the synthesized test speakers
        assert 0.0 <= m["eer"] < 45.0, metrics
    assert (exp / "scores" / "det.png").stat().st_size > 0
    assert (exp / "layer_attention.png").stat().st_size > 0
    table = (exp / "results.md").read_text().splitlines()
    assert len(table) == 4 and "AS-norm" in table[-1]

    # re-running finished stages is a no-op that keeps the outputs
    stamp = (corpus / "data" / "train" / "wav.scp").stat().st_mtime_ns
    r = run_recipe(tmp_path, "--stop_stage", "3")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert (corpus / "data" / "train" / "wav.scp").stat().st_mtime_ns == stamp
    assert "torchrun" not in r.stdout and "epoch 1" not in r.stderr


def test_unknown_recipe_option_fails_with_the_valid_ones(tmp_path):
    r = run_recipe(tmp_path, "--stgae", "3")
    assert r.returncode != 0
    assert "unknown option --stgae" in r.stderr and "--stage" in r.stderr
