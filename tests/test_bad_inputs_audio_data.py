"""Bad audio and data-dir inputs a user meets: each one is a clear message or a counted skip.

Issue 13's audio and data cases, one test each (generated audio only):
too-short utterances in extraction, truncated wav headers, rates below 8 kHz,
stereo files, missing files, Kaldi piped ``wav.scp`` entries, Latin-1 tables,
repeated ``fix_data_dir`` runs, and ``raw.list`` speakers that contradict
``utt2spk``.
"""

from __future__ import annotations

import json
import logging
import shlex
import struct

import kaldiio
import numpy as np
import pytest
import soundfile as sf
from data_helpers import make_tiny_model_dir, tone

from wespeaker_lap.bin import (
    extract,
    fix_data_dir,
    make_raw_list,
    make_shard_list,
    validate_data_dir,
)
from wespeaker_lap.dataset import audio
from wespeaker_lap.dataset.audio import BadAudio, read_audio
from wespeaker_lap.dataset.datadir import read_data_dir
from wespeaker_lap.dataset.dataset import build_eval_loader, build_train_loader
from wespeaker_lap.dataset.lists import read_raw_list, read_shard_list
from wespeaker_lap.utils.distributed import DistInfo
from wespeaker_lap.utils.trainer import prepare_data

SR = 16000


# ------------------------------------------------------------------ helpers
def wav_file(path, seconds=0.5, sr=SR, seed=0, channels=None):
    """A tone (0.4 amplitude), PCM_16; ``channels``: a list of per-channel gains."""
    x = tone(seconds, sr, seed=seed)
    if channels is not None:
        x = np.stack([g * x for g in channels], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, subtype="PCM_16")
    return path


def truncated_wav(path, seconds=1.0):
    """A wav cut to half its bytes: the header still claims every sample."""
    wav_file(path, seconds)
    blob = path.read_bytes()
    path.write_bytes(blob[: 44 + (len(blob) - 44) // 2])
    return path


def data_dir(root, wavs: dict, spk=None):
    """wav.scp / utt2spk / spk2utt from ``{key: wav.scp value}`` (sorted)."""
    root.mkdir(parents=True, exist_ok=True)
    keys = sorted(wavs)
    spk = spk or {k: k.split("-")[0] for k in keys}
    (root / "wav.scp").write_text("".join(f"{k} {wavs[k]}\n" for k in keys))
    (root / "utt2spk").write_text("".join(f"{k} {spk[k]}\n" for k in keys))
    s2u: dict[str, list[str]] = {}
    for k in keys:
        s2u.setdefault(spk[k], []).append(k)
    (root / "spk2utt").write_text("".join(f"{s} {' '.join(u)}\n" for s, u in sorted(s2u.items())))
    return root


def pipe(path) -> str:
    return f"cat {shlex.quote(str(path))} |"


def eval_keys(entries, **kw):
    loader = build_eval_loader(entries, "raw", sample_rate=SR, batch_size=4, **kw)
    keys = [k for batch in loader for k in batch["keys"]]
    return keys, loader.last_stats


@pytest.fixture
def model_dir(tmp_path):
    return make_tiny_model_dir(tmp_path / "exp")


def run_extract(model_dir, data, out, *extra):
    return extract.main(["--model_dir", str(model_dir), "--data", str(data), "--embed_dir",
                         str(out), "--no_progress", "--num_workers", "0", *extra])


def scp_keys(embed_dir):
    return sorted(kaldiio.load_scp(str(embed_dir / "xvector.scp")))


# ------------------------------------------------------------- item 6: too short
def test_extract_skips_an_utterance_shorter_than_the_receptive_field(tmp_path, model_dir,
                                                                      capsys):
    w = tmp_path / "wav"
    wavs = {f"s{i}-u{i}": str(wav_file(w / f"{i}.wav", 0.4, seed=i)) for i in range(3)}
    sf.write(str(w / "short.wav"), tone(200 / SR), SR)  # 200 samples < 400
    wavs["s9-short"] = str(w / "short.wav")
    d = data_dir(tmp_path / "data", wavs)
    assert run_extract(model_dir, d, tmp_path / "emb") == 0  # (the entry point logs to stderr)
    assert scp_keys(tmp_path / "emb") == ["s0-u0", "s1-u1", "s2-u2"]
    err = capsys.readouterr().err
    skip = [line for line in err.splitlines() if "s9-short" in line]
    assert skip and "short.wav" in skip[0] and "too_short" in skip[0]
    assert "1 input(s) skipped as bad audio (too_short 1)" in err


def test_too_short_after_resampling_is_checked_at_the_model_rate(tmp_path):
    # 8 kHz, 199 samples: 0.02488 s is below 400 samples at 16 kHz whatever the rounding
    sf.write(str(tmp_path / "a.wav"), tone(199 / 8000, 8000), 8000)
    keys, stats = eval_keys([{"key": "a", "wav": str(tmp_path / "a.wav")}],
                            min_duration=400 / SR)
    assert keys == [] and stats["too_short"] == 1


# ------------------------------------------------------------------ item 2: audio
def test_truncated_wav_is_read_with_a_warning_naming_both_lengths(tmp_path, caplog):
    path = truncated_wav(tmp_path / "cut.wav", 1.0)
    with caplog.at_level(logging.WARNING):
        keys, stats = eval_keys([{"key": "cut", "wav": str(path)}])
    assert keys == ["cut"] and stats["truncated"] == 1 and stats["skipped"] == 0
    msg = next(r.getMessage() for r in caplog.records if "truncated" in r.getMessage())
    assert "cut.wav" in msg and "header says 16000 samples, the file holds 8000" in msg


def test_validate_decode_reports_a_truncated_wav(tmp_path, capsys):
    d = data_dir(tmp_path / "data", {"a-1": str(truncated_wav(tmp_path / "cut.wav"))})
    assert validate_data_dir.main([str(d), "--decode"]) == 1
    err = capsys.readouterr().err
    assert "'a-1'" in err and "header says 16000 samples, the file holds 8000" in err


@pytest.mark.parametrize("rate", [1000, 4000])
def test_audio_below_8khz_is_refused_naming_file_and_rate(tmp_path, caplog, rate):
    path = wav_file(tmp_path / "low.wav", 0.5, sr=rate)
    with caplog.at_level(logging.WARNING):
        keys, stats = eval_keys([{"key": "low", "wav": str(path)}, {
            "key": "ok", "wav": str(wav_file(tmp_path / "ok.wav"))}])
    assert keys == ["ok"] and stats["low_rate"] == 1
    msg = next(r.getMessage() for r in caplog.records if "low.wav" in r.getMessage())
    assert f"{rate} Hz" in msg and "8000" in msg


def test_8khz_audio_is_still_accepted(tmp_path):
    keys, stats = eval_keys([{"key": "tel", "wav": str(wav_file(tmp_path / "t.wav", sr=8000))}])
    assert keys == ["tel"] and stats["skipped"] == 0


def test_stereo_with_a_silent_first_channel_is_downmixed_and_said_once(tmp_path, caplog,
                                                                      monkeypatch):
    monkeypatch.setattr(audio, "_said_downmix", set())
    entries = [{"key": f"st{i}", "wav": str(wav_file(tmp_path / f"st{i}.wav", seed=i,
                                                     channels=[0.0, 1.0]))} for i in range(2)]
    with caplog.at_level(logging.WARNING):
        keys, stats = eval_keys(entries)
    assert sorted(keys) == ["st0", "st1"] and stats["all_zero"] == 0
    said = [r for r in caplog.records if "channels" in r.getMessage()]
    assert len(said) == 1 and "mono" in said[0].getMessage()


def test_stereo_downmix_is_the_mean_of_the_channels(tmp_path):
    path = wav_file(tmp_path / "st.wav", channels=[0.5, 1.0])
    wav, rate = audio.load_audio(path)
    ref, _ = sf.read(str(path), dtype="float32")
    np.testing.assert_allclose(wav, ref.mean(axis=1), atol=1e-6)


def test_missing_file_says_no_such_file_with_the_path(tmp_path, caplog):
    gone = tmp_path / "gone.wav"
    with pytest.raises(BadAudio, match=f"no such file: {gone}"):
        read_audio(gone, SR)  # a noise / RIR file: libsndfile said "System error."
    with caplog.at_level(logging.WARNING):
        keys, stats = eval_keys([{"key": "g", "wav": str(gone)},
                                 {"key": "ok", "wav": str(wav_file(tmp_path / "ok.wav"))}])
    assert keys == ["ok"] and stats["missing"] == 1
    assert f"no such file: {gone}" in caplog.text


# ------------------------------------------------------------------ item 3: pipes
@pytest.fixture
def piped_dir(tmp_path):
    w = tmp_path / "wav"
    return data_dir(tmp_path / "data", {
        "a-1": str(wav_file(w / "1.wav", 0.4, seed=1)),
        "a-2": pipe(wav_file(w / "2.wav", 0.4, seed=2)),
        "b-3": str(wav_file(w / "3.wav", 0.4, seed=3)),
    })


def test_extract_refuses_pipes_without_the_flag_naming_the_key(tmp_path, model_dir, piped_dir,
                                                               capsys):
    assert run_extract(model_dir, piped_dir, tmp_path / "emb") == 1
    err = capsys.readouterr().err
    assert "need --allow_pipes" in err and "'a-2'" in err
    assert not (tmp_path / "emb" / "xvector.scp").exists()


def test_extract_runs_pipes_with_the_flag(tmp_path, model_dir, piped_dir):
    assert run_extract(model_dir, piped_dir, tmp_path / "emb", "--allow_pipes") == 0
    emb = {k: np.asarray(v) for k, v in kaldiio.load_scp(str(tmp_path / "emb" /
                                                             "xvector.scp")).items()}
    assert sorted(emb) == ["a-1", "a-2", "b-3"]
    # the piped utterance's embedding is the one its file gives
    d2 = data_dir(tmp_path / "plain", {"a-2": str(tmp_path / "wav" / "2.wav")})
    assert run_extract(tmp_path / "exp", d2, tmp_path / "emb2") == 0
    ref = np.asarray(kaldiio.load_scp(str(tmp_path / "emb2" / "xvector.scp"))["a-2"])
    np.testing.assert_allclose(emb["a-2"], ref, atol=1e-5)


def test_a_failing_pipe_is_skipped_naming_the_command(tmp_path, caplog):
    entries = [{"key": "bad", "wav": "exit 3 |"},
               {"key": "ok", "wav": str(wav_file(tmp_path / "ok.wav"))}]
    with caplog.at_level(logging.WARNING):
        keys, stats = eval_keys(entries, allow_pipes=True)
    assert keys == ["ok"] and stats["unreadable"] == 1
    assert "command failed (exit 3)" in caplog.text and "'bad'" in caplog.text


def test_validate_names_piped_entries_unless_allowed(piped_dir, capsys):
    assert validate_data_dir.main([str(piped_dir)]) == 1
    err = capsys.readouterr().err
    assert "'a-2'" in err and "need --allow_pipes" in err
    assert validate_data_dir.main([str(piped_dir), "--decode", "--allow_pipes"]) == 0


def test_fix_data_dir_refuses_pipes_without_the_flag_and_keeps_them_with_it(piped_dir, capsys):
    before = (piped_dir / "wav.scp").read_text()
    assert fix_data_dir.main([str(piped_dir), "--check-audio"]) == 1
    err = capsys.readouterr().err
    assert "need --allow_pipes" in err and "'a-2'" in err
    assert (piped_dir / "wav.scp").read_text() == before  # nothing dropped
    assert fix_data_dir.main([str(piped_dir), "--check-audio", "--utt2dur",
                              "--allow_pipes"]) == 0
    assert read_data_dir(piped_dir).wav["a-2"].endswith("|")
    assert read_data_dir(piped_dir).utt2dur["a-2"] == pytest.approx(0.4, abs=1e-3)


def test_training_reads_pipes_only_with_the_dataset_option(tmp_path):
    entries = [{"key": f"k{i}", "spk": "s", "wav": pipe(wav_file(tmp_path / f"{i}.wav", seed=i))}
               for i in range(2)]
    args = {"crop_seconds": 0.3, "min_duration": 0.1, "shuffle": False}
    with pytest.raises(ValueError, match="need --allow_pipes.*'k0'"):
        build_train_loader(entries, "raw", {"s": 0}, args, {"batch_size": 2}, sample_rate=SR)
    loader = build_train_loader(entries, "raw", {"s": 0}, {**args, "allow_pipes": True},
                                {"batch_size": 2}, sample_rate=SR)
    (batch,) = list(loader)
    assert batch["wavs"].shape == (2, int(0.3 * SR)) and loader.last_stats["skipped"] == 0


def test_make_shard_list_stores_piped_output_only_with_the_flag(tmp_path, piped_dir, capsys):
    args = [str(piped_dir), str(tmp_path / "shards"), str(tmp_path / "shard.list")]
    assert make_shard_list.main(args) == 1
    assert "need --allow_pipes" in capsys.readouterr().err
    assert make_shard_list.main([*args, "--allow_pipes"]) == 0
    assert len(read_shard_list(tmp_path / "shard.list")) == 1
    loader = build_eval_loader(tmp_path / "shard.list", "shard", sample_rate=SR)
    assert sorted(k for b in loader for k in b["keys"]) == ["a-1", "a-2", "b-3"]


# ---------------------------------------------------------------- item 4: data dirs
def latin1_dir(tmp_path):
    d = data_dir(tmp_path / "data", {"a-1": str(wav_file(tmp_path / "1.wav"))})
    (d / "wav.scp").write_bytes(b"a-1 /data/caf\xe9/1.wav\n")  # Latin-1 e-acute
    return d


@pytest.mark.parametrize("tool", ["fix", "validate", "read", "make_raw_list", "raw_list"])
def test_latin1_table_is_an_error_naming_file_and_line(tmp_path, capsys, tool):
    d = latin1_dir(tmp_path)
    if tool == "raw_list":  # a raw.list written by another tool in Latin-1
        (tmp_path / "raw.list").write_bytes(b'{"key": "a", "wav": "/x.wav"}\n'
                                            b'{"key": "b", "wav": "/caf\xe9.wav"}\n')
        with pytest.raises(ValueError) as e:
            read_raw_list(tmp_path / "raw.list")
        assert f"{tmp_path / 'raw.list'}:2: not UTF-8" in str(e.value)
        return
    if tool == "make_raw_list":
        assert make_raw_list.main([str(d), str(tmp_path / "raw.list")]) == 1
        err = capsys.readouterr().err
    elif tool == "fix":
        assert fix_data_dir.main([str(d)]) == 1
        err = capsys.readouterr().err
    elif tool == "validate":
        assert validate_data_dir.main([str(d)]) == 1
        err = capsys.readouterr().err
    else:
        with pytest.raises(ValueError) as e:
            read_data_dir(d)  # what extract --data and make_raw_list read
        err = str(e.value)
    assert f"{d / 'wav.scp'}:1: not UTF-8" in err and "0xe9" in err


def test_second_fix_data_dir_run_keeps_the_first_backup(tmp_path):
    w = tmp_path / "wav"
    d = data_dir(tmp_path / "data", {f"a-{i}": str(wav_file(w / f"{i}.wav", seed=i))
                                     for i in range(3)})
    original = (d / "wav.scp").read_text()
    (d / "wav.scp").write_text(original + "zz-extra /nowhere.wav\n")  # not in utt2spk
    first = (d / "wav.scp").read_text()
    assert fix_data_dir.main([str(d)]) == 0
    assert (d / ".backup" / "wav.scp").read_text() == first
    assert fix_data_dir.main([str(d)]) == 0  # already valid: no new backup
    assert not (d / ".backup.1").exists()
    (d / "utt2spk").write_text("a-0 a\na-1 a\n")  # drop one utterance
    assert fix_data_dir.main([str(d)]) == 0
    assert (d / ".backup" / "wav.scp").read_text() == first  # the original survives
    assert (d / ".backup.1" / "wav.scp").read_text() == original
    assert "a-2" in (d / ".backup.1" / "dropped_utts").read_text()


def _train_cfg(tmp_path, raw_spk: dict, label_spk: dict):
    wavs = {k: str(wav_file(tmp_path / "w" / f"{k}.wav", seed=i)) for i, k in enumerate(raw_spk)}
    (tmp_path / "raw.list").write_text("".join(
        json.dumps({"key": k, "spk": s, "wav": wavs[k]}) + "\n" for k, s in raw_spk.items()))
    (tmp_path / "utt2spk").write_text("".join(f"{k} {s}\n" for k, s in label_spk.items()))
    return {"train_data": str(tmp_path / "raw.list"), "train_label": str(tmp_path / "utt2spk"),
            "data_type": "raw", "seed": 0, "accum_grad": 1,
            "dataset_args": {"crop_seconds": 0.3, "min_duration": 0.1},
            "dataloader_args": {"batch_size": 2}}


def test_training_warns_when_raw_list_speakers_contradict_utt2spk(tmp_path, caplog):
    label = {"u1": "A", "u2": "A", "u3": "B", "u4": "B"}
    raw = {"u1": "A", "u2": "B", "u3": "A", "u4": "B"}  # two utterances swapped
    cfg = _train_cfg(tmp_path, raw, label)
    with caplog.at_level(logging.WARNING):
        prepare_data(cfg, DistInfo(), SR, {"A": 0, "B": 1}, 4)
    msg = next(r.getMessage() for r in caplog.records if "utt2spk" in r.getMessage())
    assert "2 of 4 utterances" in msg and "'u2'" in msg


def test_training_says_nothing_when_raw_list_and_utt2spk_agree(tmp_path, caplog):
    label = {"u1": "A", "u2": "B"}
    cfg = _train_cfg(tmp_path, label, label)
    with caplog.at_level(logging.WARNING):
        prepare_data(cfg, DistInfo(), SR, {"A": 0, "B": 1}, 2)
    assert "utt2spk" not in caplog.text


def test_riff_header_parser_reads_the_claimed_length():
    blob = b"RIFF" + struct.pack("<I", 36 + 200) + b"WAVE" + b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, SR, 2 * SR, 2, 16) + b"data" + struct.pack("<I", 200) + bytes(100)
    assert audio.declared_frames(blob) == 100
    assert "header says 100 samples, the file holds 50" in audio.truncation(blob, 50)
    streaming = blob[:40] + struct.pack("<I", 0xFFFFFFFF) + blob[44:]
    assert audio.declared_frames(streaming) is None  # a writer that could not seek
