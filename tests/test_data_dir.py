"""Kaldi data dirs: reading, the validator (each kind of inconsistency) and the fixer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import make_corpus, tone, write_audio

from wespeaker_lap.bin import fix_data_dir as fix_cli
from wespeaker_lap.bin import validate_data_dir as validate_cli
from wespeaker_lap.dataset.datadir import fix_data_dir, read_data_dir, validate_data_dir


@pytest.fixture(autouse=True)
def _no_root_logging(monkeypatch):
    """The CLIs configure the root logger; keep them from binding it to pytest's streams."""
    for cli in (fix_cli, validate_cli):
        monkeypatch.setattr(cli, "setup_logging", lambda *a, **k: None)


@pytest.fixture
def data_dir(tmp_path):
    return make_corpus(tmp_path, num_spk=3, num_utt=3)


def _lines(path):
    return path.read_text().splitlines()


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))


def _has(problems, *words):
    return any(all(w in p for w in words) for p in problems)


def test_generated_data_dir_is_valid_and_reads_back(data_dir):
    assert validate_data_dir(data_dir, decode=True) == []
    d = read_data_dir(data_dir)
    assert len(d.wav) == 9 and d.speakers == ["id10000", "id10001", "id10002"]
    assert d.spk2utt["id10001"] == sorted(k for k, s in d.utt2spk.items() if s == "id10001")


@pytest.mark.parametrize("table", ["wav.scp", "utt2spk", "spk2utt"])
def test_validate_and_read_agree_on_a_byte_order_mark(data_dir, table, caplog):
    """A BOM-prefixed table is valid for validate as for read (both strip it with a warning)."""
    path = data_dir / table
    path.write_bytes("\ufeff".encode() + path.read_bytes())
    with caplog.at_level("WARNING"):
        assert validate_data_dir(data_dir) == []
    assert "byte-order mark" in caplog.text and str(path) in caplog.text
    d = read_data_dir(data_dir)
    assert len(d.wav) == 9 and not any(k.startswith("\ufeff") for k in (*d.wav, *d.spk2utt))


def test_validate_names_a_line_that_is_not_utf8(data_dir):
    path = data_dir / "utt2spk"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([lines[0], b"caf\xe9 id10000\n", *lines[1:]]))
    assert _has(validate_data_dir(data_dir), "utt2spk:2", "not UTF-8")
    with pytest.raises(ValueError, match="utt2spk:2: not UTF-8"):
        read_data_dir(data_dir)


def test_validate_rejects_unsorted_wav_scp_naming_the_line(data_dir):
    lines = _lines(data_dir / "wav.scp")
    lines[1], lines[2] = lines[2], lines[1]
    _write(data_dir / "wav.scp", lines)
    problems = validate_data_dir(data_dir)
    assert _has(problems, "wav.scp:3:", "not sorted")


def test_validate_uses_byte_order_not_locale_order(tmp_path):
    # LC_ALL=C puts upper case before lower case; a locale-aware sort would not.
    wav = {}
    for key in ("B-1", "a-1"):
        wav[key] = str(write_audio(tmp_path / f"{key}.wav", tone(0.3)))
    d = tmp_path / "d"
    d.mkdir()
    _write(d / "wav.scp", [f"a-1 {wav['a-1']}", f"B-1 {wav['B-1']}"])
    _write(d / "utt2spk", ["a-1 a", "B-1 B"])
    _write(d / "spk2utt", ["a a-1", "B B-1"])
    problems = validate_data_dir(d)
    assert _has(problems, "wav.scp:2:", "not sorted")
    assert _has(problems, "utt2spk:2:", "not sorted")


def test_validate_rejects_duplicate_keys(data_dir):
    lines = _lines(data_dir / "utt2spk")
    _write(data_dir / "utt2spk", lines[:2] + [lines[1]] + lines[2:])
    assert _has(validate_data_dir(data_dir), "utt2spk:3:", "duplicate key", "line 2")


def test_validate_rejects_utt2spk_spk2utt_disagreement(data_dir):
    lines = _lines(data_dir / "spk2utt")
    first = lines[0].split()
    moved = first.pop()  # an utterance of speaker 0 now listed under speaker 1
    second = lines[1].split()
    lines[0], lines[1] = " ".join(first), " ".join(second[:1] + sorted(second[1:] + [moved]))
    _write(data_dir / "spk2utt", lines)
    problems = validate_data_dir(data_dir)
    assert _has(problems, "spk2utt:2:", moved, "utt2spk line")


def test_validate_rejects_utterance_missing_from_spk2utt(data_dir):
    lines = _lines(data_dir / "spk2utt")
    _write(data_dir / "spk2utt", [" ".join(lines[0].split()[:-1])] + lines[1:])
    assert _has(validate_data_dir(data_dir), "missing from spk2utt")


def test_validate_rejects_wav_scp_and_utt2spk_key_mismatch(data_dir):
    lines = _lines(data_dir / "wav.scp")
    _write(data_dir / "wav.scp", lines[:-1])
    problems = validate_data_dir(data_dir)
    assert _has(problems, "utt2spk:9:", "is not in", "wav.scp")


def test_validate_rejects_missing_audio_file(data_dir):
    first = _lines(data_dir / "wav.scp")[0].split(maxsplit=1)[1]
    Path(first).unlink()
    assert _has(validate_data_dir(data_dir), "wav.scp:1:", "no such file")
    assert validate_data_dir(data_dir, check_audio=False) == []


def test_validate_rejects_malformed_line_and_missing_spk2utt(data_dir):
    lines = _lines(data_dir / "utt2spk")
    lines[0] = lines[0].split()[0]  # key only
    _write(data_dir / "utt2spk", lines)
    (data_dir / "spk2utt").unlink()
    problems = validate_data_dir(data_dir)
    assert _has(problems, "utt2spk:1:", "expected 2")
    assert _has(problems, "spk2utt", "missing")


def test_validate_rejects_bad_utt2dur(data_dir):
    keys = [line.split()[0] for line in _lines(data_dir / "wav.scp")]
    _write(data_dir / "utt2dur", [f"{k} {'-1' if i == 4 else '1.0'}" for i, k in enumerate(keys)])
    assert _has(validate_data_dir(data_dir), "utt2dur:5:", "not a positive number")


def test_validate_decode_lists_every_bad_file(data_dir, tmp_path):
    wav = read_data_dir(data_dir).wav
    keys = list(wav)
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    bad = {
        keys[0]: write_audio(tmp_path / "zero.wav", np.zeros(8000, np.float32)),
        keys[3]: tmp_path / "junk.wav",
        keys[5]: write_audio(tmp_path / "short.wav", tone(0.1)),
        keys[7]: write_audio(tmp_path / "empty.wav", np.zeros(0, np.float32)),
    }
    lines = [f"{k} {bad.get(k, wav[k])}" for k in keys]
    _write(data_dir / "wav.scp", lines)
    assert validate_data_dir(data_dir) == []  # the paths exist
    problems = validate_data_dir(data_dir, decode=True, min_duration=0.2, max_report=1)
    for k, why in ((keys[0], "all_zero"), (keys[3], "unreadable"), (keys[5], "too_short"),
                   (keys[7], "empty")):
        assert _has(problems, repr(k), why), (k, why, problems)
    assert len(problems) == 4


def test_validate_cli_exits_nonzero_and_names_the_line(data_dir, capsys):
    assert validate_cli.main([str(data_dir)]) == 0
    lines = _lines(data_dir / "utt2spk")
    lines[0], lines[1] = lines[1], lines[0]
    _write(data_dir / "utt2spk", lines)
    assert validate_cli.main([str(data_dir)]) == 1
    assert "utt2spk:2:" in capsys.readouterr().err


def test_fix_data_dir_sorts_drops_incomplete_utterances_and_regenerates_spk2utt(data_dir):
    wav_lines = _lines(data_dir / "wav.scp")
    u2s_lines = _lines(data_dir / "utt2spk")
    dropped_wav = wav_lines[0].split()[0]  # only in utt2spk after this
    dropped_spk = u2s_lines[-1].split()[0]  # only in wav.scp after this
    _write(data_dir / "wav.scp", list(reversed(wav_lines[1:])) + ["extra-utt /no/such.wav"])
    _write(data_dir / "utt2spk", u2s_lines[:-1])
    _write(data_dir / "spk2utt", ["garbage line"])
    report = fix_data_dir(data_dir, check_audio=True)
    dropped = {k for ks in report.dropped.values() for k in ks}
    assert {dropped_wav, dropped_spk, "extra-utt"} <= dropped
    assert report.kept == 7
    assert validate_data_dir(data_dir) == []
    assert (data_dir / ".backup" / "spk2utt").read_text() == "garbage line\n"
    assert dropped_wav in (data_dir / ".backup" / "dropped_utts").read_text()


def test_fix_data_dir_computes_utt2dur(data_dir):
    fix_data_dir(data_dir, utt2dur=True)
    d = read_data_dir(data_dir)
    assert set(d.utt2dur) == set(d.wav) and all(0.5 < v < 1.5 for v in d.utt2dur.values())
    assert validate_data_dir(data_dir) == []


def test_fix_cli_reports_what_it_dropped(data_dir, capsys):
    lines = _lines(data_dir / "utt2spk")
    _write(data_dir / "utt2spk", lines[1:])
    assert fix_cli.main([str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "kept 8" in out and "not in utt2spk: 1" in out
