"""examples/voxceleb/v2_lap: data preparation on fabricated trees of the real corpus
layouts (VoxCeleb1 wav, VoxCeleb2 dev m4a made with ffmpeg, the official cleaned trial
lists, MUSAN, RIRS_NOISES), then stages 1-7 end to end with a tiny random WavLM.

The helpers that fabricate audio and the tiny training config are shared with
tests/test_recipe_vctk.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from wespeaker_lap.api import load_model
from wespeaker_lap.dataset.datadir import read_data_dir, validate_data_dir

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "voxceleb" / "v2_lap"

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                  reason="VoxCeleb2 m4a files are made and decoded with ffmpeg")


def load_local(path: Path):
    """Import a recipe's local/ script as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


prep = load_local(RECIPE / "local" / "prepare_voxceleb.py")
musan_rirs = load_local(RECIPE / "local" / "prepare_musan_rirs.py")


# ------------------------------------------------------------------ shared fabrication helpers
def voice(seed: int, seconds: float, rate: int) -> np.ndarray:
    """A speaker-ish signal: harmonics of a seed-dependent pitch, amplitude-modulated, noisy."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 90 + 15 * (seed % 13)
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def write_audio(path: Path, seed: int, seconds: float = 2.5, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, voice(seed, seconds, rate), rate)
    return path


def tiny_ssl_model(path: Path) -> Path:
    """A save_pretrained tiny random WavLM, usable as --ssl_model."""
    from wespeaker_lap.frontend import SSLFrontend
    from wespeaker_lap.frontend.testing import tiny_ssl_config

    if not (path / "config.json").is_file():
        SSLFrontend(config=tiny_ssl_config("wavlm")).save_pretrained(path)
    return path


def tiny_config(src: Path, out: Path) -> Path:
    """``src`` shrunk for a CPU test: one epoch of small batches, a small backend, no AMP.

    Written beside the phase-2/3 configs derived from it (``<out>_phase2.yaml`` ...),
    shrunk the same way, when ``src`` has them.
    """
    for suffix in ("", "_phase2", "_phase3"):
        s = src.with_name(src.stem + suffix + ".yaml")
        if not s.is_file():
            continue
        cfg = yaml.safe_load(s.read_text())
        cfg.update(num_epochs=1, num_avg=1, enable_amp=False, log_batch_interval=1,
                   gpus=None)
        for key in ("accum_grad", "lr_reference_batch"):
            if key in cfg:
                cfg[key] = 1 if key == "accum_grad" else None
        cfg["dataloader_args"].update(batch_size=4, num_workers=0, prefetch_factor=None)
        cfg["dataset_args"].update(shuffle_args={"shuffle_size": 50}, num_frms=100)
        cfg["model_args"].update(lap_dim=32, heads=4, embed_dim=32)
        cfg["scheduler_args"]["warm_up_epoch"] = 0
        cfg["model_init"] = None
        path = out.with_name(out.stem + suffix + ".yaml")
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def run_recipe(recipe: Path, *opts: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    return subprocess.run(["bash", str(recipe / "run.sh"), *opts], capture_output=True,
                          text=True, env=env, timeout=timeout)


def assert_recipe_package(pkg: Path, threshold_list: str, cal_list: str,
                          test_sets: list[str], wav_a: str, wav_b: str) -> None:
    """A recipe's package stage: thresholds on its named list, the recipe's QMF model as the
    calibration, the card's test-set rows; it loads and verifies with an LLR."""
    meta = json.loads((pkg / "package.json").read_text())
    assert meta["thresholds"]["trials"]["name"] == threshold_list
    assert set(meta["thresholds"]["values"]) == {"eer", "mindcf0.01", "mindcf0.05"}
    assert meta["calibration"]["fit_on"].startswith(cal_list), meta["calibration"]
    assert [t["name"] for t in meta["test_sets"]] == test_sets
    card = (pkg / "README.md").read_text()
    assert "## Results" in card and "## The thresholds on the test sets" in card
    assert not [p for p in pkg.rglob("*") if p.suffix in (".pt", ".pkl")]
    r = load_model(pkg).verify(wav_a, wav_b)
    assert r.llr is not None and f"measured on {threshold_list}" in r.threshold_source


def assert_valid(data_dir: Path) -> None:
    problems = validate_data_dir(data_dir)
    assert not problems, problems


# ------------------------------------------------------------------ VoxCeleb trees
VOX1_SPEAKERS = ("id10270", "id10271", "id10272", "id10273")
VOX2_SPEAKERS = ("id00012", "id00015", "id00017", "id00019", "id00020", "id00021")
# two more for the recipe test, which holds two speakers out to validate on and still needs
# six training speakers (phase 3's inter-top-5 head)
VOX2_MORE_SPEAKERS = ("id00023", "id00024")
VIDEOS = ("1zcIwhmdeo4", "x6uYqmx31kE")


def make_vox1(root: Path) -> list[str]:
    """``root/wav/idXXXXX/<video>/NNNNN.wav``; returns the utterance keys."""
    keys = []
    for i, spk in enumerate(VOX1_SPEAKERS):
        for v, video in enumerate(VIDEOS):
            for n in (1, 2):
                key = f"{spk}/{video}/{n:05d}.wav"
                write_audio(root / "wav" / key, seed=100 + 10 * i + 3 * v + n)
                keys.append(key)
    return keys


def make_official_trials(root: Path, keys: list[str]) -> None:
    """The three cleaned lists in the official ``1|0 enroll test`` format."""
    spk = {k: k.split("/")[0] for k in keys}
    pairs = [(a, b) for i, a in enumerate(keys) for b in keys[i + 1:]]
    lines = [f"{int(spk[a] == spk[b])} {a} {b}" for a, b in pairs]
    (root / "veri_test2.txt").write_text("\n".join(lines[::3]) + "\n")
    (root / "list_test_all2.txt").write_text("\n".join(lines) + "\n")
    (root / "list_test_hard2.txt").write_text("\n".join(lines[1::2]) + "\n")


def make_vox2_dev(root: Path, tmp: Path, speakers: tuple[str, ...] = VOX2_SPEAKERS
                  ) -> list[Path]:
    """``root/dev/aac/idXXXXX/<video>/NNNNN.m4a`` (AAC, 16 kHz mono, as released)."""
    inputs, outputs = [], []
    for i, spk in enumerate(speakers):
        for v, video in enumerate(VIDEOS):
            for n in (1, 2):
                wav = write_audio(tmp / f"{spk}_{video}_{n}.wav", seed=500 + 10 * i + 3 * v + n)
                out = root / "dev" / "aac" / spk / video / f"{n:05d}.m4a"
                out.parent.mkdir(parents=True, exist_ok=True)
                inputs.append(wav)
                outputs.append(out)
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
    for wav in inputs:
        cmd += ["-i", str(wav)]
    for j, out in enumerate(outputs):
        cmd += ["-map", f"{j}:a", "-c:a", "aac", "-b:a", "64k", str(out)]
    subprocess.run(cmd, check=True)
    return outputs


def make_musan(root: Path) -> None:
    """openslr 17: musan/{noise,music,speech}/<source>/<name>.wav plus its text files."""
    for kind, source in (("noise", "free-sound"), ("music", "fma"), ("speech", "librivox")):
        for n in range(2):
            write_audio(root / kind / source / f"{kind}-{source}-{n:04d}.wav", seed=900 + n,
                        seconds=3.0)
        (root / kind / source / "ANNOTATIONS").write_text("name\n")
        (root / kind / source / "LICENSE").write_text("CC\n")
    (root / "README").write_text("MUSAN\n")


def make_rirs(root: Path) -> None:
    """openslr 28: RIRS_NOISES/simulated_rirs/<size>room/RoomNNN/RoomNNN-NNNNN.wav."""
    rng = np.random.default_rng(0)
    for size in ("smallroom", "mediumroom", "largeroom"):
        for n in range(1, 3):
            path = root / "simulated_rirs" / size / "Room001" / f"Room001-{n:05d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            rir = rng.standard_normal(1600) * np.exp(-np.arange(1600) / 200.0)
            sf.write(path, (0.5 * rir / np.abs(rir).max()).astype(np.float32), 16000)
        (root / "simulated_rirs" / size / "rir_list").write_text("--rir-id x\n")
    # the other parts of the archive are not simulated RIRs and must be left out
    write_audio(root / "real_rirs_isotropic_noises" / "air_type1_air_binaural_1_1.wav", seed=1)
    write_audio(root / "pointsource_noises" / "noise-free-sound-0001.wav", seed=2)


# ------------------------------------------------------------------ unit tests
def test_official_trials_become_kaldi_trials(tmp_path):
    src = tmp_path / "veri_test2.txt"
    src.write_text("1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav\n"
                   "0 id10270/x6uYqmx31kE/00001.wav id10300/ize_eiCFEg0/00003.wav\n")
    assert prep.convert_trials(src, tmp_path / "o.kaldi") == (1, 1)
    assert (tmp_path / "o.kaldi").read_text().splitlines() == [
        "id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav target",
        "id10270/x6uYqmx31kE/00001.wav id10300/ize_eiCFEg0/00003.wav nontarget",
    ]


def test_trials_naming_missing_utterances_are_an_error(tmp_path):
    src = tmp_path / "veri_test2.txt"
    src.write_text("1 id10270/a/00001.wav id10270/b/00002.wav\n")
    with pytest.raises(ValueError, match="1 utterance.*id10270/b/00002.wav"):
        prep.convert_trials(src, tmp_path / "o.kaldi", known={"id10270/a/00001.wav"})
    src.write_text("2 id10270/a/00001.wav id10270/b/00002.wav\n")
    with pytest.raises(ValueError, match="label must be 0 or 1"):
        prep.convert_trials(src, tmp_path / "o.kaldi")


def test_voxceleb_keys_keep_the_official_wav_names():
    assert prep.voxceleb_key(Path("id00012/21Uxsk56VDQ/00001.flac")) == \
        "id00012/21Uxsk56VDQ/00001.wav"
    with pytest.raises(ValueError, match="expected <speaker>/<video>"):
        prep.voxceleb_key(Path("id00012/00001.flac"))


def test_calibration_trials_are_balanced_distinct_and_seeded():
    utt2spk = {f"id{s:05d}/v/{u:05d}.wav": f"id{s:05d}" for s in range(5) for u in range(6)}
    rows = prep.sample_trials(utt2spk, 40, seed=3)
    assert rows == prep.sample_trials(utt2spk, 40, seed=3)
    assert rows != prep.sample_trials(utt2spk, 40, seed=4)
    labels = [r[2] for r in rows]
    assert labels.count("target") == 20 and labels.count("nontarget") == 20
    assert len({frozenset(r[:2]) for r in rows}) == 40
    for e, t, label in rows:
        assert e != t and (utt2spk[e] == utt2spk[t]) == (label == "target")


def test_validation_split_holds_whole_speakers_out_seeded_and_capped():
    utt2spk = {f"id{s:05d}/v/{u:05d}.wav": f"id{s:05d}" for s in range(10) for u in range(30)}
    train, valid = prep.split_valid(utt2spk, 3, 20, seed=5)
    held = {utt2spk[u] for u in valid}
    assert len(held) == 3 and not held & {utt2spk[u] for u in train}
    assert len(valid) == 60 and len(train) == 7 * 30  # capped at 20 each; the rest unused
    assert (train, valid) == prep.split_valid(utt2spk, 3, 20, seed=5)
    assert valid != prep.split_valid(utt2spk, 3, 20, seed=6)[1]
    with pytest.raises(ValueError, match=r"--num_speakers must be in \[1, 9\]"):
        prep.split_valid(utt2spk, 10, 20, seed=5)


def test_musan_and_rirs_dirs_follow_the_openslr_layouts(tmp_path):
    make_musan(tmp_path / "musan")
    make_rirs(tmp_path / "RIRS_NOISES")
    musan = musan_rirs.musan_entries(tmp_path / "musan")
    assert sorted(musan) == sorted(
        f"{k}/{s}/{k}-{s}-{n:04d}"
        for k, s in (("noise", "free-sound"), ("music", "fma"), ("speech", "librivox"))
        for n in range(2))
    assert {v[1] for v in musan.values()} == {"noise", "music", "babble"}
    assert musan["speech/librivox/speech-librivox-0000"][1] == "babble"
    rirs = musan_rirs.rir_entries(tmp_path / "RIRS_NOISES")
    assert len(rirs) == 6 and all(k.startswith("simulated_rirs/") for k in rirs)
    with pytest.raises(FileNotFoundError, match="no simulated_rirs/"):
        musan_rirs.rir_entries(tmp_path / "musan")


@needs_ffmpeg
def test_decoding_is_resumable(tmp_path):
    make_vox2_dev(tmp_path / "vox2", tmp_path / "src")
    src, dst = tmp_path / "vox2" / "dev" / "aac", tmp_path / "flac"
    assert len(prep.decode_plan(src, dst, "flac")) == 24
    assert prep.decode_tree(src, dst, "flac", nj=2) == []
    assert prep.decode_plan(src, dst, "flac") == []
    done = sorted(dst.glob("*/*/*.flac"))
    info = sf.info(done[0])
    assert len(done) == 24 and info.samplerate == 16000 and info.channels == 1
    stamp = done[1].stat().st_mtime_ns
    done[0].unlink()  # as if killed before this one was renamed into place
    (done[0].parent / f".{done[0].name}.part").write_bytes(b"half")
    assert [p[1] for p in prep.decode_plan(src, dst, "flac")] == [done[0]]
    assert prep.decode_tree(src, dst, "flac", nj=1) == []
    assert done[0].is_file() and done[1].stat().st_mtime_ns == stamp
    assert not list(dst.rglob("*.part"))


# ------------------------------------------------------------------ the recipe end to end
@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    if shutil.which("ffmpeg") is None:
        pytest.skip("VoxCeleb2 m4a files are made and decoded with ffmpeg")
    root = tmp_path_factory.mktemp("corpora")
    keys = make_vox1(root / "voxceleb1")
    make_official_trials(root / "voxceleb1", keys)
    make_vox2_dev(root / "voxceleb2", root / "src", VOX2_SPEAKERS + VOX2_MORE_SPEAKERS)
    make_musan(root / "musan")
    make_rirs(root / "RIRS_NOISES")
    return root


@pytest.mark.slow
def test_recipe_stages_1_to_9_on_fabricated_voxceleb(tmp_path, corpora):
    work = tmp_path
    config = tiny_config(ROOT / "conf" / "lap_astp_wavlm_base_plus.yaml", work / "tiny.yaml")
    opts = ["--vox1_root", str(corpora / "voxceleb1"), "--vox2_root", str(corpora / "voxceleb2"),
            "--musan_root", str(corpora / "musan"), "--rirs_root", str(corpora / "RIRS_NOISES"),
            "--vox2_audio", str(work / "vox2_flac"), "--data", str(work / "data"),
            "--exp", str(work / "exp"), "--nj", "2", "--num_utts_per_shard", "10",
            "--num_cal_trials", "40", "--top_n", "3", "--gpus", "", "--config", str(config),
            "--ssl_model", str(tiny_ssl_model(work / "tiny_wavlm")),
            "--num_valid_speakers", "2", "--num_valid_trials", "20"]
    r = run_recipe(RECIPE, *opts, "--stop_stage", "7")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    for stage in range(1, 8):
        assert f"Stage {stage}:" in r.stdout

    # stage 1: valid data dirs keyed by VoxCeleb ids, decoded audio, Kaldi trials
    data = work / "data"
    for x in ("vox1", "vox2_dev"):
        assert_valid(data / x)
        assert (data / x / "utt2dur").is_file()
    vox2 = read_data_dir(data / "vox2_dev")
    assert len(vox2.wav) == 32 and len(vox2.spk2utt) == 8
    assert "id00012/1zcIwhmdeo4/00001.wav" in vox2.wav
    assert all(p.endswith(".flac") and p.startswith(str(work / "vox2_flac")) for p in
               vox2.wav.values())
    assert read_data_dir(data / "vox1").utt2spk["id10271/x6uYqmx31kE/00002.wav"] == "id10271"
    for name, kaldi in (("veri_test2.txt", "O"), ("list_test_all2.txt", "E"),
                        ("list_test_hard2.txt", "H")):
        official = (corpora / "voxceleb1" / name).read_text().split("\n")
        lines = (data / "vox1" / "trials" / f"vox1_{kaldi}_cleaned.kaldi").read_text().split("\n")
        assert len(lines) == len(official)
        first = official[0].split()
        assert lines[0].split() == [first[1], first[2], "target" if first[0] == "1" else
                                    "nontarget"]
    cal = (data / "vox2_dev" / "trials" / "qmf_cal.kaldi").read_text().splitlines()
    assert len(cal) == 40
    assert (data / "musan" / "utt2type").read_text().count("babble") == 2
    # the validation split: 2 of the 8 speakers held out, their trials; training without them
    train, valid = read_data_dir(data / "vox2_train"), read_data_dir(data / "vox2_valid")
    assert len(valid.spk2utt) == 2 and len(train.spk2utt) == 6 and len(train.wav) == 24
    assert not set(valid.spk2utt) & set(train.spk2utt)
    vtrials = (data / "vox2_valid" / "trials.kaldi").read_text().split("\n")
    assert {line.split()[2] for line in vtrials if line} == {"target", "nontarget"}
    assert all(u in valid.wav for line in vtrials if line for u in line.split()[:2])
    # stage 2: shards of the training speakers, MUSAN and RIR lists
    shards = (data / "vox2_train" / "shard.list").read_text().split()
    assert len(shards) == 3 and all(Path(s).is_file() for s in shards)
    musan = [json.loads(x) for x in (data / "musan.list").read_text().splitlines()]
    assert {m["type"] for m in musan} == {"noise", "music", "babble"}
    assert len((data / "rirs.list").read_text().splitlines()) == 6

    # stages 3-7: one system trained (and validated), averaged, extracted, scored three ways
    exp = work / "exp" / "tiny"
    assert (exp / "models" / "avg_model.pt").is_file()
    assert '"valid": {"eer"' in (exp / "train_log.jsonl").read_text()
    assert "--select best_valid" in r.stderr
    for x in ("vox1", "vox2_dev"):
        assert (exp / "embeddings" / x / "xvector.scp").is_file()
    metrics = json.loads((exp / "scores" / "metrics.json").read_text())
    assert len(metrics) == 6  # O/E/H x cosine/AS-norm
    metrics.update(json.loads((exp / "scores" / "metrics_qmf.json").read_text()))
    assert len(metrics) == 9
    for m in metrics.values():
        assert m["n_target"] > 0 and m["n_nontarget"] > 0 and 0.0 <= m["eer"] <= 100.0
    table = (exp / "results.md").read_text().splitlines()
    assert len(table) == 5 and "vox1_H_cleaned" in table[0] and "QMF" in table[-1]

    # finished stages are skipped on a re-run
    stamp = (data / "vox2_dev" / "wav.scp").stat().st_mtime_ns
    r = run_recipe(RECIPE, *opts, "--stop_stage", "3")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert (data / "vox2_dev" / "wav.scp").stat().st_mtime_ns == stamp
    assert "epoch 1" not in r.stderr

    # stages 8-9: joint fine-tuning, then large-margin fine-tuning, each re-extracted and
    # scored; their checkpoints carry the fine-tuned SSL weights, which extraction loads
    r = run_recipe(RECIPE, *opts, "--stage", "8", "--stop_stage", "9")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    for phase in ("tiny_phase2", "tiny_phase3"):
        pexp = work / "exp" / phase
        weights = torch.load(pexp / "models" / "avg_model.pt", weights_only=True)
        assert any(k.startswith("frontend.model.encoder.") for k in weights)
        pm = json.loads((pexp / "scores" / "metrics.json").read_text())
        assert len(pm) == 6 and all(m["n_target"] > 0 for m in pm.values())
    p1 = torch.load(exp / "models" / "avg_model.pt", weights_only=True)
    assert not any(k.startswith("frontend.") for k in p1)  # phase 1: SSL referenced only

    # stage 10: the newest evaluated phase's package, thresholds on the calibration trials
    r = run_recipe(RECIPE, *opts, "--stage", "10", "--stop_stage", "10")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "Stage 10:" in r.stdout and "tiny_phase3/package" in r.stdout
    vox1 = read_data_dir(data / "vox1").wav
    a, b = sorted(vox1)[:2]
    assert_recipe_package(work / "exp" / "tiny_phase3" / "package", "vox2_dev_qmf_cal",
                          "qmf_cal.kaldi", [f"vox1_{x}_cleaned" for x in "OEH"], vox1[a],
                          vox1[b])


def test_stage_1_names_the_missing_corpus_option(tmp_path):
    r = run_recipe(RECIPE, "--data", str(tmp_path / "data"), "--stop_stage", "1")
    assert r.returncode != 0 and "stage 1 needs --vox1_root" in r.stderr
    r = run_recipe(RECIPE, "--vox1_rot", "x")
    assert r.returncode != 0 and "unknown option --vox1_rot" in r.stderr


def test_recipe_scripts_pass_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    scripts = [RECIPE / "run.sh", RECIPE / "path.sh"] + [
        ROOT / "tools" / f"{x}.sh"
        for x in ("train", "average_model", "extract_embeddings", "score", "calibrate")]
    r = subprocess.run(["shellcheck", "-x", *map(str, scripts)], capture_output=True,
                       text=True, cwd=RECIPE)
    assert r.returncode == 0, r.stdout
