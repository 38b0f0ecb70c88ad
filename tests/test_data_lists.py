"""raw.list / shard.list / noise and RIR lists / spk2id: writing, reading, round trips."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest
from data_helpers import make_corpus, tone, write_audio

from wespeaker_lap.bin import make_raw_list as raw_cli
from wespeaker_lap.bin import make_shard_list as shard_cli
from wespeaker_lap.dataset import processor as P
from wespeaker_lap.dataset.datadir import fix_data_dir, read_data_dir
from wespeaker_lap.dataset.lists import (
    decode_key,
    encode_key,
    make_shard_list,
    make_spk2id,
    raw_entries_from_data_dir,
    read_raw_list,
    read_shard_list,
    read_source_lists,
    read_spk2id,
    source_entries_from_folder,
    split_member_name,
    write_raw_list,
    write_spk2id,
)


@pytest.fixture(autouse=True)
def _no_root_logging(monkeypatch):
    for cli in (raw_cli, shard_cli):
        monkeypatch.setattr(cli, "setup_logging", lambda *a, **k: None)


@pytest.fixture
def data_dir(tmp_path):
    return make_corpus(tmp_path, num_spk=2, num_utt=5, formats=("wav", "flac"))


@pytest.mark.parametrize("key", ["id10001/1zcIwhmdeo4/00001.wav", "a%2Fb", "..", "../x", "ü-1",
                                 "with space", "-dash.start"])
def test_encode_key_is_tar_safe_and_round_trips_exactly(key):
    name = encode_key(key)
    member = f"{name}.wav"
    assert "/" not in member and " " not in member and member not in (".", "..")
    assert decode_key(name) == key
    assert split_member_name(f"{name}.wav") == (key, "wav")


def test_raw_list_round_trips_data_dir_with_voxceleb_keys_and_durations(data_dir, tmp_path):
    fix_data_dir(data_dir, utt2dur=True)
    data = read_data_dir(data_dir)
    out = tmp_path / "raw.list"
    assert raw_cli.main([str(data_dir), str(out), "--spk2id", str(tmp_path / "spk2id")]) == 0
    entries = read_raw_list(out, required=("key", "spk", "wav"))
    assert [e["key"] for e in entries] == list(data.wav)
    assert all(e["wav"] == data.wav[e["key"]] and e["spk"] == data.utt2spk[e["key"]]
               for e in entries)
    assert all(abs(e["dur"] - data.utt2dur[e["key"]]) < 1e-3 for e in entries)
    assert "/" in entries[0]["key"]
    assert read_spk2id(tmp_path / "spk2id") == {"id10000": 0, "id10001": 1}
    # each line is one plain JSON object
    first = json.loads(out.read_text().splitlines()[0])
    assert set(first) == {"key", "spk", "wav", "dur"}


@pytest.mark.parametrize("line, message", [
    ("{not json", "not JSON"),
    ('["a", "b"]', "expected a JSON object"),
    ('{"key": "u1"}', "missing field"),
    ('{"key": "u0", "wav": "x"}', "duplicate key"),
])
def test_read_raw_list_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "raw.list"
    path.write_text('{"key": "u0", "wav": "x"}\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"raw.list:2: .*{message}"):
        read_raw_list(path)


def _members(tar_path):
    with tarfile.open(tar_path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_shard_tars_hold_audio_bytes_and_speaker_per_encoded_key(data_dir, tmp_path):
    data = read_data_dir(data_dir)
    shard_list = tmp_path / "shard.list"
    assert shard_cli.main([str(data_dir), str(tmp_path / "shards"), str(shard_list),
                           "--num-utts-per-shard", "3", "--nj", "2"]) == 0
    shards = read_shard_list(shard_list)
    assert len(shards) == 4 and all(Path(s).is_absolute() and Path(s).is_file() for s in shards)
    seen = {}
    for s in shards:
        members = _members(s)
        assert len(members) in (2, 6)  # 3 utterances a shard, the last one has 1
        for name, blob in members.items():
            assert "/" not in name
            key, ext = split_member_name(name)
            if ext == "spk":
                assert blob.decode() == data.utt2spk[key]
            else:
                assert ext == Path(data.wav[key]).suffix[1:]
                assert blob == Path(data.wav[key]).read_bytes()
                seen[key] = s
    assert set(seen) == set(data.wav)
    # the streaming reader recovers the exact keys and speakers
    opened = list(P.open_shards({"shard": s} for s in shards))
    assert sorted(o["key"] for o in opened) == sorted(data.wav)
    assert all(o["spk"] == data.utt2spk[o["key"]] for o in opened)


def test_make_shard_list_failure_leaves_no_list_and_no_partial_tar(data_dir, tmp_path):
    entries = raw_entries_from_data_dir(read_data_dir(data_dir))
    shard_dir, shard_list = tmp_path / "shards", tmp_path / "shard.list"
    shard_list.write_text("/old/list/from/a/previous/run.tar\n")
    entries[7]["wav"] = str(tmp_path / "gone.wav")
    with pytest.raises(FileNotFoundError, match="gone.wav"):
        make_shard_list(entries, shard_dir, shard_list, num_utts_per_shard=4, shuffle=False)
    assert not shard_list.exists()
    names = sorted(p.name for p in shard_dir.iterdir())
    assert "shards_000001.tar" not in names  # the shard with the bad entry never appears
    assert not [n for n in names if n.endswith(".tmp")]
    for n in names:  # whatever did complete is a whole, readable tar
        assert len(_members(shard_dir / n)) in (4, 8)


def test_noise_lists_from_folder_and_data_dir(tmp_path, data_dir):
    for i, sub in enumerate(["a", "b/c", "b/d"]):
        write_audio(tmp_path / "noise" / sub / f"n{i}.wav", tone(0.5, seed=i))
    (tmp_path / "noise" / "readme.txt").write_text("not audio")
    entries = source_entries_from_folder(tmp_path / "noise", "noise")
    assert [e["key"] for e in entries] == ["a/n0.wav", "b/c/n1.wav", "b/d/n2.wav"]
    noise_list = tmp_path / "noise.list"
    write_raw_list(noise_list, entries)
    babble_list = tmp_path / "babble.list"
    assert raw_cli.main(["--type", "speech", str(data_dir), str(babble_list)]) == 0
    rir_list = tmp_path / "rir.list"
    assert raw_cli.main(["--type", "rir", str(tmp_path / "noise"), str(rir_list)]) == 0
    sources = read_source_lists([noise_list, babble_list])
    assert len(sources["noise"]) == 3 and len(sources["babble"]) == 10
    assert set(read_source_lists(rir_list)) == {"rir"}


def test_noise_list_line_without_type_is_an_error(tmp_path):
    path = tmp_path / "noise.list"
    write_raw_list(path, [{"key": "n", "wav": "/x.wav"}])
    with pytest.raises(ValueError, match="missing field"):
        read_source_lists(path)
    write_raw_list(path, [{"key": "n", "wav": "/x.wav", "type": "hum"}])
    with pytest.raises(ValueError, match="unknown source type 'hum'"):
        read_source_lists(path)


def test_spk2id_round_trip_and_rejects_gaps(tmp_path):
    spk2id = make_spk2id(["b", "a", "b", "C"])
    assert spk2id == {"C": 0, "a": 1, "b": 2}  # byte order
    write_spk2id(tmp_path / "spk2id", spk2id)
    assert read_spk2id(tmp_path / "spk2id") == spk2id
    (tmp_path / "bad").write_text("a 0\nb 2\n")
    with pytest.raises(ValueError, match="0..1"):
        read_spk2id(tmp_path / "bad")


def test_source_list_types_come_from_utt2type_with_type_auto(tmp_path, capsys):
    from wespeaker_lap.bin import make_raw_list
    from wespeaker_lap.dataset.lists import read_source_lists

    d = tmp_path / "noise"
    d.mkdir()
    (d / "wav.scp").write_text("babble-1 /x/b1.wav\nmusic-1 /x/m1.wav\nnoise-1 /x/n1.wav\n")
    (d / "utt2type").write_text("babble-1 babble\nmusic-1 music\nnoise-1 noise\n")
    make_raw_list.main(["--type", "auto", str(d), str(tmp_path / "noise.list")])
    assert read_source_lists(tmp_path / "noise.list") == {
        "babble": ["/x/b1.wav"], "music": ["/x/m1.wav"], "noise": ["/x/n1.wav"]}
    (d / "utt2type").write_text("babble-1 babble\nmusic-1 jazz\nnoise-1 noise\n")
    assert make_raw_list.main(["--type", "auto", str(d), str(tmp_path / "bad.list")]) == 1
    assert re.search("utt2type.*music-1.*jazz", capsys.readouterr().err)


def test_rir_dir_with_only_wav_scp_makes_a_source_list(tmp_path):
    from wespeaker_lap.bin import make_raw_list
    from wespeaker_lap.dataset.lists import read_source_lists

    d = tmp_path / "rirs"
    d.mkdir()
    (d / "wav.scp").write_text("rir-1 /x/r1.wav\nrir-2 /x/r2.wav\n")
    make_raw_list.main(["--type", "rir", str(d), str(tmp_path / "rir.list")])
    assert read_source_lists(tmp_path / "rir.list") == {"rir": ["/x/r1.wav", "/x/r2.wav"]}
