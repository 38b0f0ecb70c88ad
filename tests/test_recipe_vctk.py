"""examples/vctk: the VCTK 0.92 protocol (unit tests of the split and the trials at the
protocol's size) and the recipe's stages 1-8 on a fabricated VCTK tree (48 kHz mic1/mic2
flac files, a speaker-info.txt in the release's format) with a tiny random WavLM.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_recipe_voxceleb import (
    assert_recipe_package,
    assert_valid,
    load_local,
    run_recipe,
    tiny_config,
    tiny_ssl_model,
    voice,
)

from wespeaker_lap.dataset.datadir import read_data_dir
from wespeaker_lap.io.files import read_table

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "vctk"
vctk = load_local(RECIPE / "local" / "prepare_vctk.py")

# The release's speaker-info.txt: space-aligned columns, a trailing space after the
# header, regions of several words or none, comments in parentheses (p280, p315).
SPEAKER_INFO = """\
ID  AGE  GENDER  ACCENTS  REGION COMMENTS 
p225  23  F    English    Southern  England
p226  22  M    English    Surrey
p227  38  M    English    Cumbria
p228  22  F    English    Southern  England
p229  23  F    English    Southern  England
p230  22  F    English    Stockton-on-tees
p231  23  F    English    Southern  England
p232  23  M    English    Southern  England
p233  23  F    English    Staffordshire
p234  22  F    Scottish    West  Dumfries
p236  23  F    English    Manchester
p237  22  M    Scottish    Fife
p238  22  F    NorthernIrish    Belfast
p241  21  M    Scottish    Perth
p245  25  M    Irish    Dublin
p248  23  F    Indian
p251  26  M    Indian
p280  25  F    Unknown    France (mic2 files unavailable)
p294  33  F    American    San  Francisco
p315  18  M    American    New  England (Text and mic2 files unavailable)
p329  23  F    American
p330  26  F    American
p360  19  M    American    New  Jersey
p376  22  M    Indian
"""  # noqa: W291


def make_vctk(root: Path, rate: int = 48000) -> dict[str, int]:
    """``wav48_silence_trimmed/pXXX/pXXX_NNN_mic{1,2}.flac`` + speaker-info.txt.

    Each speaker reads utterances 001, 002 and 024 (dropped by the protocol) and
    4 to 7 of its own from 025 on; mic2 exists for the first of those except for
    p280. Returns the number of kept utterances per speaker.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "speaker-info.txt").write_text(SPEAKER_INFO)
    kept = {}
    speakers = [line.split()[0] for line in SPEAKER_INFO.splitlines()[1:]]
    for i, spk in enumerate(speakers):
        own = 4 + i % 4
        nums = [1, 2, 24] + list(range(25, 25 + own))
        for n in nums:
            for mic in ("mic1", "mic2"):
                if mic == "mic2" and (n != 25 or spk == "p280"):
                    continue
                path = root / "wav48_silence_trimmed" / spk / f"{spk}_{n:03d}_{mic}.flac"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, voice(1000 + 37 * i + n, 2.0, rate), rate, subtype="PCM_16")
        kept[spk] = own
    (root / "txt").mkdir()  # transcripts are not used
    return kept


def speakers_from_info(n_per_cell: dict[tuple[str, str], int], seed: int = 0) -> tuple:
    """Metadata-only speakers: ``({id: Speaker}, {id: num_utts})``."""
    rng = np.random.default_rng(seed)
    info, counts = {}, {}
    i = 0
    for (gender, accent), n in n_per_cell.items():
        for _ in range(n):
            spk = f"p{300 + i}"
            info[spk] = vctk.Speaker(spk, int(rng.integers(18, 34)), gender, accent)
            counts[spk] = int(rng.integers(300, 420))
            i += 1
    return info, counts


# ------------------------------------------------------------------ metadata
def test_speaker_info_parses_the_release_format():
    info = vctk.parse_speaker_info(SPEAKER_INFO)
    assert len(info) == 24 and "ID" not in info
    assert info["p225"] == vctk.Speaker("p225", 23, "F", "English", "Southern England")
    assert info["p280"].accent == "Unknown" and info["p280"].region == "France"
    assert info["p280"].comment == "mic2 files unavailable"
    assert info["p315"].region == "New England"
    assert info["p315"].comment == "Text and mic2 files unavailable"
    assert info["p248"].region == "" and info["p248"].accent == "Indian"
    assert vctk.parse_speaker_info("ID AGE GENDER ACCENTS\n225 23 F English\n")["p225"].age == 23


def test_speaker_info_errors_name_the_line():
    with pytest.raises(ValueError, match=r"speaker-info.txt:2: expected ID AGE GENDER"):
        vctk.parse_speaker_info("ID  AGE  GENDER  ACCENTS\np225  23  F\n")
    with pytest.raises(ValueError, match=r":2: bad age/gender"):
        vctk.parse_speaker_info("ID  AGE  GENDER  ACCENTS\np225  23  X  English\n")


def test_only_mic1_utterances_from_025_on_are_kept(tmp_path):
    assert vctk.utterance_number("p225_025_mic1.flac") == ("p225", 25)
    assert vctk.utterance_number("p225_025_mic2.flac") is None
    assert vctk.utterance_number("p225_025.txt") is None
    wav = tmp_path / "wav48_silence_trimmed"
    for name in ("p225_001_mic1.flac", "p225_024_mic1.flac", "p225_025_mic1.flac",
                 "p225_025_mic2.flac", "p225_367_mic1.flac"):
        (wav / "p225").mkdir(parents=True, exist_ok=True)
        (wav / "p225" / name).write_bytes(b"")
    (wav / "p226").mkdir()
    (wav / "p226" / "p226_003_mic1.flac").write_bytes(b"")
    audio = vctk.scan_audio(wav)
    assert {s: sorted(u) for s, u in audio.items()} == {"p225": ["p225_025", "p225_367"]}
    info = vctk.parse_speaker_info(SPEAKER_INFO)
    assert vctk.select_speakers(info, {**audio, "p280": {"p280_030": Path("x")},
                                       "s5": {"s5_030": Path("y")}}) == ["p225"]


# ------------------------------------------------------------------ split
def test_split_is_60_20_20_and_stratified_at_the_protocol_size():
    cells = {("F", "English"): 22, ("M", "English"): 12, ("F", "Scottish"): 8,
             ("M", "Scottish"): 11, ("F", "American"): 17, ("M", "American"): 5,
             ("F", "Irish"): 5, ("M", "Irish"): 4, ("F", "Canadian"): 5, ("M", "Canadian"): 3,
             ("F", "SouthAfrican"): 4, ("M", "Indian"): 2, ("F", "Welsh"): 1,
             ("M", "NorthernIrish"): 4, ("F", "NorthernIrish"): 5}
    info, counts = speakers_from_info(cells)
    assert len(info) == 108  # VCTK 0.92 less p280 and p315
    keys = vctk.strata(list(info.values()), counts)
    split = vctk.split_speakers(keys, (0.6, 0.2, 0.2), seed=1)
    assert split == vctk.split_speakers(keys, (0.6, 0.2, 0.2), seed=1)
    assert split != vctk.split_speakers(keys, (0.6, 0.2, 0.2), seed=2)
    sizes = Counter(split.values())
    for name, frac in zip(vctk.SUBSETS, (0.6, 0.2, 0.2), strict=True):
        assert abs(sizes[name] - frac * 108) < 1.0, sizes
    # every value of every factor (gender, accent, age bin, count bin) is split in
    # proportion to within two speakers per subset
    for level in range(4):
        for value, n in Counter(k[level] for k in keys.values()).items():
            got = Counter(split[s] for s, k in keys.items() if k[level] == value)
            for name, frac in zip(vctk.SUBSETS, (0.6, 0.2, 0.2), strict=True):
                assert abs(got[name] - frac * n) <= 2.0, (level, value, got)
    assert {k[3] for k in keys.values()} == {"low", "high"}
    assert {vctk.age_bin(a) for a in (18, 21, 22, 24, 25, 38)} == {"<22", "22-24", ">=25"}


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="fractions"):
        vctk.split_speakers({"p1": ("F",)}, (0.6, 0.4), seed=0)


# ------------------------------------------------------------------ trials
def test_spread_evenly_fills_bins_up_to_their_capacity():
    rng = np.random.default_rng(0)
    assert vctk.spread_evenly(12, [10, 10, 10], rng).tolist() == [4, 4, 4]
    assert vctk.spread_evenly(12, [0, 1, 100], rng).tolist() == [0, 1, 11]
    assert vctk.spread_evenly(50, [3, 4], rng).tolist() == [3, 4]
    alloc = vctk.spread_evenly(10, [9, 9, 9, 9], rng)
    assert alloc.sum() == 10 and alloc.max() - alloc.min() == 1


def _check_trials(spk2utts, info, tgt, non, num_target, num_nontarget):
    spk_of = {u: s for s, us in spk2utts.items() for u in us}
    assert len(tgt) == num_target and len(non) == num_nontarget
    pairs = [frozenset(t[:2]) for t in tgt + non]
    assert len(set(pairs)) == len(pairs) and all(len(p) == 2 for p in pairs)
    assert all(spk_of[e] == spk_of[t] and lab == "target" for e, t, lab in tgt)
    assert all(spk_of[e] != spk_of[t] and lab == "nontarget" for e, t, lab in non)
    # even over speakers, except those with fewer utterance pairs than their share (all used)
    per_spk = Counter(spk_of[e] for e, _, _ in tgt)
    assert set(per_spk) == set(spk2utts)
    top = max(per_spk.values())
    for spk, n in per_spk.items():
        n_utts = len(spk2utts[spk])
        assert n >= top - 1 or n == n_utts * (n_utts - 1) // 2, per_spk
    cells = Counter((info[spk_of[e]].gender == info[spk_of[t]].gender,
                     info[spk_of[e]].accent == info[spk_of[t]].accent) for e, t, _ in non)
    return cells


def test_trials_at_the_protocol_size_are_even_over_speakers_and_cells():
    cells = {("F", "English"): 5, ("M", "English"): 3, ("F", "Scottish"): 3,
             ("M", "Scottish"): 2, ("F", "American"): 3, ("M", "Irish"): 2, ("M", "Indian"): 1}
    info, counts = speakers_from_info(cells, seed=3)
    assert len(info) == 19
    spk2utts = {s: [f"{s}_{n:03d}" for n in range(25, 25 + counts[s])] for s in info}
    rng = np.random.default_rng(7)
    tgt = vctk.target_trials(spk2utts, 8000, rng)
    non, per_cell = vctk.nontarget_trials(spk2utts, info, 8000, rng)
    found = _check_trials(spk2utts, info, tgt, non, 8000, 8000)
    assert dict(found) == per_cell == {c: 2000 for c in vctk.CELLS}


def test_a_cell_without_speaker_pairs_gives_its_share_to_the_others():
    info = {s: vctk.Speaker(s, 22, g, "English") for s, g in (("p1", "F"), ("p2", "M"),
                                                              ("p3", "F"))}
    spk2utts = {s: [f"{s}_{n:03d}" for n in range(25, 35)] for s in info}
    non, per_cell = vctk.nontarget_trials(spk2utts, info, 90, np.random.default_rng(0))
    assert per_cell == {(True, True): 45, (True, False): 0, (False, True): 45, (False, False): 0}
    assert len(non) == 90


# ------------------------------------------------------------------ the recipe end to end
@pytest.mark.slow
def test_recipe_stages_1_to_8_on_fabricated_vctk(tmp_path):
    kept = make_vctk(tmp_path / "VCTK-Corpus-0.92")
    work = tmp_path / "work"
    config = tiny_config(ROOT / "conf" / "lap_astp_wavlm_base_plus.yaml", tmp_path / "tiny.yaml")
    opts = ["--vctk_root", str(tmp_path / "VCTK-Corpus-0.92"), "--data", str(work / "data"),
            "--exp", str(work / "exp"), "--nj", "2", "--num_target", "30",
            "--num_nontarget", "40", "--top_n", "5", "--gpus", "", "--config", str(config),
            "--ssl_model", str(tiny_ssl_model(tmp_path / "tiny_wavlm"))]
    r = run_recipe(RECIPE, *opts)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    for stage in range(1, 9):
        assert f"Stage {stage}:" in r.stdout

    data = work / "data"
    rows = read_table(data / "speakers.tsv", 7, 7)[1:]
    subset = {row[0]: row[6] for row in rows}
    assert "p280" not in subset and "p315" not in subset and len(subset) == 22
    sizes = Counter(subset.values())
    for name, frac in zip(vctk.SUBSETS, (0.6, 0.2, 0.2), strict=True):
        assert abs(sizes[name] - frac * 22) < 1.0, sizes
    info = vctk.parse_speaker_info(SPEAKER_INFO)
    dirs = {}
    for name in vctk.SUBSETS:
        assert_valid(data / name)
        d = dirs[name] = read_data_dir(data / name)
        assert set(d.spk2utt) == {s for s, x in subset.items() if x == name}
        for s, utts in d.spk2utt.items():
            assert len(utts) == kept[s]
            assert all(int(u.split("_")[1]) >= 25 for u in utts)
        first = next(iter(d.wav.values()))
        assert first.endswith(".flac") and sf.info(first).samplerate == 16000
    for name in ("val", "test"):
        trials = read_table(data / "trials" / f"vctk_{name}.kaldi", 3, 3)
        spk2utts = dirs[name].spk2utt
        tgt = [tuple(t) for t in trials if t[2] == "target"]
        non = [tuple(t) for t in trials if t[2] == "nontarget"]
        pair_caps = sum(len(u) * (len(u) - 1) // 2 for u in spk2utts.values())
        per_cell = _check_trials(spk2utts, info, tgt, non, min(30, pair_caps), 40)
        # cells are even unless one runs out of speaker pairs (then it is full)
        caps = Counter()
        for a, b in combinations(sorted(spk2utts), 2):
            cell = (info[a].gender == info[b].gender, info[a].accent == info[b].accent)
            caps[cell] += len(spk2utts[a]) * len(spk2utts[b])
        top = max(per_cell.values())
        for cell in vctk.CELLS:
            assert per_cell[cell] == caps[cell] or per_cell[cell] >= top - 1, (per_cell, caps)

    exp = work / "exp" / "tiny"
    for x in vctk.SUBSETS:
        assert (exp / "embeddings" / x / "xvector.scp").is_file()
    # validated on the val speakers; the average took the best-validated checkpoint
    assert '"valid": {"eer"' in (exp / "train_log.jsonl").read_text()
    assert "--select best_valid" in r.stderr
    metrics = json.loads((exp / "scores" / "metrics.json").read_text())
    metrics.update(json.loads((exp / "scores" / "metrics_qmf.json").read_text()))
    assert len(metrics) == 3  # cosine, AS-norm, AS-norm + QMF
    for m in metrics.values():
        assert m["n_target"] == 30 and m["n_nontarget"] == 40
    table = (exp / "results.md").read_text().splitlines()
    assert len(table) == 5 and "vctk_test" in table[0]
    wavs = sorted(dirs["test"].wav.values())
    assert_recipe_package(exp / "package", "vctk_val", "vctk_val.kaldi", ["vctk_test"],
                          wavs[0], wavs[1])

    # a re-run skips the finished stages, and keeps the 16 kHz files
    stamp = Path(first).stat().st_mtime_ns
    r = run_recipe(RECIPE, *opts, "--stop_stage", "3")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert Path(first).stat().st_mtime_ns == stamp and "epoch 1" not in r.stderr


def test_vctk_recipe_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    import subprocess

    r = subprocess.run(["shellcheck", "-x", "run.sh", "path.sh"], capture_output=True, text=True,
                       cwd=RECIPE)
    assert r.returncode == 0, r.stdout
