"""The mini recipe's backend comparison without Resemblyzer installed: the peer row of
local/compare_table.py, compare_backends.sh's system checks (run as a copy whose run.sh
and python only log their command lines), and local/embed_resemblyzer.py's output read
by the project's scoring, with a stand-in ``resemblyzer`` module."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile

from wespeaker_lap.io.xvectors import EmbeddingTable, load_mean_vec

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / "examples" / "mini" / "local"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _metrics(d: Path, eer: float, peer: str | None = None) -> str:
    (d / "scores").mkdir(parents=True)
    m = {"eer": eer, "eer_ci": [eer - 0.02, eer + 0.02], "min_dcf_0.01": 0.9,
         "min_dcf_0.05": 0.7}
    (d / "scores" / "metrics_ci.json").write_text(json.dumps(
        {"t.score": {"set": "test", "scoring": "cosine", **m}}))
    if peer is not None:
        (d / "peer.txt").write_text(peer + "\n")
    return str(d)


def _table(*dirs: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LOCAL / "compare_table.py"), *dirs],
                          capture_output=True, text=True, env=ENV)


def test_compare_table_renders_a_peer_row_after_the_seeded_systems(tmp_path):
    dirs = [_metrics(tmp_path / "resemblyzer", 0.1182, "Resemblyzer GE2E (pre-trained)"),
            _metrics(tmp_path / "lap_astp_seed1", 0.08),
            _metrics(tmp_path / "lap_astp_seed2", 0.10)]
    r = _table(*dirs)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    names = [row.split(" | ")[0] for row in rows[1:]]
    assert names == ["| lap_astp", "| Resemblyzer GE2E (pre-trained)"]  # the peer last
    peer = rows[2]
    assert "| pre-trained | 11.82 | [9.82, 13.82] |" in peer and "+-" not in peer
    assert "| 2 | 9.00 +- 1.41 |" in rows[1]


def test_compare_table_refuses_an_empty_peer_label(tmp_path):
    r = _table(_metrics(tmp_path / "resemblyzer", 0.1, ""))
    assert r.returncode != 0
    assert f"{tmp_path / 'resemblyzer' / 'peer.txt'}: empty" in r.stderr


FAKE = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$FAKE_LOG"
"""
# a python that logs its command line, then runs (with extra PYTHONPATH entries)
LOGGED = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$FAKE_LOG"
PYTHONPATH={path} exec {python} "$@"
"""


def _script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def _mini(tmp_path: Path, python: str = FAKE) -> Path:
    """A copy of examples/mini whose run.sh logs only, and a ``python`` (on PATH) that logs
    only (``FAKE``) or logs and runs."""
    mini = tmp_path / "repo" / "examples" / "mini"
    (mini / "local").mkdir(parents=True)
    shutil.copy(LOCAL / "compare_backends.sh", mini / "local")
    for name in ("score_ci.py", "compare_table.py", "embed_resemblyzer.py"):
        shutil.copy(LOCAL / name, mini / "local")
    shutil.copytree(ROOT / "examples" / "mini" / "conf", mini / "conf")
    (mini / "tools").symlink_to(ROOT / "tools")
    (mini / "path.sh").write_text("export LC_ALL=C\n")
    _script(mini / "run.sh", FAKE)
    (mini / "corpus" / "data" / "train").mkdir(parents=True)  # as stage 1 leaves it
    (mini / "corpus" / "data" / "train" / "spk2utt").write_text("s1 u1\ns2 u2\n")
    (mini / "exp" / "ssl_random").mkdir(parents=True)  # random weights saved already
    (mini / "exp" / "ssl_random" / ".done").touch()
    _script(tmp_path / "bin" / "python", python)
    return mini


def _compare(tmp_path: Path, *opts: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """compare_backends.sh of the copy _mini made; returns (proc, logged commands)."""
    log = tmp_path / "commands.log"
    log.write_text("")
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "FAKE_LOG": str(log)}
    proc = subprocess.run(["bash", str(tmp_path / "repo/examples/mini/local/compare_backends.sh"),
                           *opts], capture_output=True, text=True, env=env, timeout=300)
    return proc, log.read_text().splitlines()


def test_compare_backends_refuses_resemblyzer_without_its_venv_before_any_work(tmp_path):
    _mini(tmp_path)
    venv = tmp_path / "no-venv"
    proc, commands = _compare(tmp_path, "--systems", "lap_astp resemblyzer",
                              "--resemblyzer_venv", str(venv))
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"compare_backends.sh: system resemblyzer needs the venv {venv} (no bin/python there; "
        f"make it with: bash local/install_resemblyzer.sh --venv {venv})")
    assert commands == []


def test_compare_backends_refuses_an_unknown_system_before_any_work(tmp_path):
    _mini(tmp_path)
    proc, commands = _compare(tmp_path, "--systems", "lap_astp lap_astpp")
    assert proc.returncode == 1
    assert "unknown system 'lap_astpp'" in proc.stderr and "conf/lap_astpp.yaml" in proc.stderr
    assert commands == []


def test_compare_backends_default_systems_take_resemblyzer_only_when_its_venv_exists(tmp_path):
    mini = _mini(tmp_path)
    venv = tmp_path / "venv"
    proc, commands = _compare(tmp_path, "--seeds", "1", "--resemblyzer_venv", str(venv))
    assert proc.returncode == 0, proc.stderr
    assert "resemblyzer left out: no venv" in proc.stderr
    trained = [c for c in commands if c.startswith("run.sh") and "--stage 3" in c]
    assert len(trained) == 6  # five backends and random weights, one seed each
    assert not commands[-1].endswith("resemblyzer_plain_cosine")

    _script(venv / "bin" / "python", FAKE)
    for d in ("resemblyzer", "resemblyzer_plain_cosine"):  # the peer scored already
        (mini / "exp" / d).mkdir()
        (mini / "exp" / d / "peer.txt").write_text("peer\n")
    proc, commands = _compare(tmp_path, "--seeds", "1", "--resemblyzer_venv", str(venv))
    assert proc.returncode == 0, proc.stderr
    assert "left out" not in proc.stderr
    assert not any("embed_resemblyzer" in c for c in commands)  # finished: skipped
    assert commands[-1].startswith("python local/compare_table.py")
    assert commands[-1].endswith("exp/resemblyzer ./exp/resemblyzer_plain_cosine")


def _tiny_corpus(data: Path, rng: np.random.Generator) -> None:
    """train (3 speakers) and test (4 speakers) of 1 s tones, a speaker's pitch its own;
    test trials of every pair."""
    for name, spks in (("train", ["t1", "t2", "t3"]), ("test", ["e1", "e2", "e3", "e4"])):
        d = data / name
        d.mkdir(parents=True, exist_ok=True)
        utts = [(f"{s}-{i}", s) for s in spks for i in range(3)]
        for u, s in utts:
            f0 = 100 + 40 * spks.index(s) + 5 * rng.standard_normal()
            x = 0.3 * np.sin(2 * np.pi * f0 * np.arange(16000) / 16000)
            soundfile.write(d / f"{u}.wav", (x + 0.01 * rng.standard_normal(16000))
                            .astype(np.float32), 16000)
        (d / "wav.scp").write_text("".join(f"{u} {d / u}.wav\n" for u, _ in utts))
        (d / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in utts))
        (d / "spk2utt").write_text("".join(
            f"{s} {' '.join(u for u, t in utts if t == s)}\n" for s in spks))
        if name == "test":
            (d / "trials.kaldi").write_text("".join(
                f"{a} {b} {'target' if sa == sb else 'nontarget'}\n"
                for i, (a, sa) in enumerate(utts) for b, sb in utts[i + 1:]))


def test_compare_backends_scores_the_peer_with_the_projects_scoring(tmp_path):
    """The peer alone: stage 1 only, embeddings of train and test by the venv's python (a
    stand-in resemblyzer here), scores and intervals by the project's, two peer rows."""
    stand_in = _stand_in(tmp_path)
    mini = _mini(tmp_path, LOGGED.format(path=ROOT, python=sys.executable))
    _tiny_corpus(mini / "corpus" / "data", np.random.default_rng(0))
    venv = tmp_path / "venv"
    _script(venv / "bin" / "python", LOGGED.format(path=stand_in, python=sys.executable))
    proc, commands = _compare(tmp_path, "--systems", "resemblyzer",
                              "--resemblyzer_venv", str(venv))
    assert proc.returncode == 0, proc.stderr
    assert [c for c in commands if c.startswith("run.sh")] == [
        "run.sh --workdir . --quick false --seed 7 --stop_stage 1"]  # no SSL model needed
    embedded = [c.split("--data ")[1].split()[0] for c in commands if "embed_resemblyzer" in c]
    assert [Path(d).name for d in embedded] == ["train", "test"]
    exp = mini / "exp"
    ci = json.loads((exp / "resemblyzer" / "scores" / "metrics_ci.json").read_text())
    assert sorted(m["scoring"] for m in ci.values()) == ["AS-norm", "cosine"]
    assert any(".asnorm3" in k for k in ci)  # top_n cut to the 3 training speakers
    plain = json.loads((exp / "resemblyzer_plain_cosine/scores/metrics_ci.json").read_text())
    assert [m["scoring"] for m in plain.values()] == ["cosine"]
    assert all(m["num_trials"] == 66 for m in [*ci.values(), *plain.values()])
    rows = [r for r in (exp / "compare.md").read_text().splitlines() if "pre-trained on" in r]
    assert len(rows) == 3 and all("| pre-trained |" in r for r in rows)

    proc, commands = _compare(tmp_path, "--systems", "resemblyzer",
                              "--resemblyzer_venv", str(venv))
    assert proc.returncode == 0, proc.stderr
    assert not any("embed_resemblyzer" in c or "score" in c for c in commands)  # done: skipped


STAND_IN = {
    "__init__.py": """
import numpy as np
import soundfile

from resemblyzer.hparams import sampling_rate


def preprocess_wav(path):
    wav, sr = soundfile.read(path, dtype="float32")
    assert sr == sampling_rate
    return wav[np.abs(wav) > 0.01]  # silence trimmed, as the VAD would


class VoiceEncoder:
    def __init__(self, device=None, verbose=True):
        self.proj = np.random.default_rng(0).standard_normal((4, 8))

    def embed_utterance(self, wav):
        feats = np.array([wav.size, np.abs(wav).mean(), wav.std(), wav.max()]) + 1.0
        e = np.maximum(feats @ self.proj, 0) + 1e-3
        return (e / np.linalg.norm(e)).astype(np.float32)
""",
    "audio.py": """
def normalize_volume(wav, target_dbfs, increase_only=False):
    return wav * 2.0
""",
    "hparams.py": "sampling_rate = 16000\naudio_norm_target_dBFS = -30\n",
}


def _stand_in(tmp_path: Path) -> Path:
    """A directory for PYTHONPATH with the stand-in ``resemblyzer`` package."""
    pkg = tmp_path / "stand_in" / "resemblyzer"
    pkg.mkdir(parents=True)
    for name, text in STAND_IN.items():
        (pkg / name).write_text(text)
    return pkg.parent


def test_embed_resemblyzer_writes_what_the_projects_scoring_reads(tmp_path):
    _stand_in(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    lines = []
    for key, amp in (("b-2", 0.5), ("a-1", 0.2), ("c-silent", 0.0)):
        wav = tmp_path / f"{key}.wav"
        soundfile.write(wav, (amp * rng.standard_normal(16000)).astype(np.float32), 16000)
        lines.append(f"{key} {wav}\n")
    (data / "wav.scp").write_text("".join(lines))
    out = tmp_path / "emb"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "stand_in")}
    r = subprocess.run([sys.executable, str(LOCAL / "embed_resemblyzer.py"), "--data", str(data),
                        "--embed_dir", str(out)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "c-silent: the VAD kept nothing; embedded untrimmed" in r.stderr
    assert "3 utterances (1 embedded untrimmed)" in r.stderr
    table = EmbeddingTable.from_scp(out / "xvector.scp")
    assert table.keys == ["a-1", "b-2", "c-silent"] and table.dim == 8
    np.testing.assert_allclose(np.linalg.norm(table.matrix, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(load_mean_vec(out / "mean_vec.npy"), table.matrix.mean(0),
                               rtol=1e-5, atol=1e-7)
    assert sorted(p.name for p in out.iterdir()) == ["mean_vec.npy", "xvector.ark", "xvector.scp"]


def test_embed_resemblyzer_refuses_a_piped_wav_scp_entry(tmp_path):
    _stand_in(tmp_path)
    (tmp_path / "wav.scp").write_text("u1 sox x.flac -t wav - |\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "stand_in")}
    r = subprocess.run([sys.executable, str(LOCAL / "embed_resemblyzer.py"), "--data",
                        str(tmp_path), "--embed_dir", str(tmp_path / "emb")],
                       capture_output=True, text=True, env=env)
    assert r.returncode != 0
    assert f"{tmp_path / 'wav.scp'}:1: piped entry" in r.stderr
    assert not (tmp_path / "emb").exists()
