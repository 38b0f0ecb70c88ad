"""Atomic writes and Kaldi-style tables."""

import os

import pytest

from wespeaker_lap.io.files import atomic_path, atomic_write, read_scp, read_table


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "scores.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.txt"]
    with atomic_write(target) as f:
        f.write("new\n")
    assert target.read_text() == "new\n"


def test_atomic_files_get_the_umask_mode_not_private(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "model.pt") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "model.pt").stat().st_mode & 0o777 == 0o644


def test_atomic_files_get_the_umask_mode_when_the_writer_makes_a_fresh_file(tmp_path):
    """safetensors writes a new 0600 file in the temporary's place: the mode is set after."""
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "model.safetensors") as tmp:
            tmp.unlink()
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
    finally:
        os.umask(old)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_read_table_names_file_and_line_of_a_bad_row(tmp_path):
    p = tmp_path / "utt2spk"
    p.write_text("a spk1\n\nb\n")
    with pytest.raises(ValueError, match=r"utt2spk:3: expected 2 fields, got 1"):
        read_table(p)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_table(tmp_path / "missing")


def test_read_scp_keeps_spaces_in_values_and_rejects_duplicate_keys(tmp_path):
    p = tmp_path / "wav.scp"
    p.write_text("a /data/my file.wav\nb /x.wav\n")
    assert read_scp(p) == {"a": "/data/my file.wav", "b": "/x.wav"}
    p.write_text("a /x.wav\na /y.wav\n")
    with pytest.raises(ValueError, match="duplicate key 'a'"):
        read_scp(p)
