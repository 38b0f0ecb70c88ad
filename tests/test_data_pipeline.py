"""The streaming pipeline: splitting, speed perturbation, crops, augmentation, bad audio, eval."""

from __future__ import annotations

import io
import logging
import tarfile
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch
from data_helpers import HAVE_ESPEAK, espeak, make_corpus, needs_espeak, tone, write_audio

from wespeaker_lap.dataset import processor as P
from wespeaker_lap.dataset.audio import power, reverberate
from wespeaker_lap.dataset.augment import Augmenter
from wespeaker_lap.dataset.datadir import read_data_dir, write_data_dir
from wespeaker_lap.dataset.dataset import (
    build_eval_loader,
    build_train_dataset,
    build_train_loader,
    parse_dataset_args,
)
from wespeaker_lap.dataset.lists import (
    make_shard_list,
    make_spk2id,
    raw_entries_from_data_dir,
    source_entries_from_folder,
    write_raw_list,
)

SMALL = {"crop_seconds": 0.25, "min_duration": 0.0, "shuffle_args": {"shuffle_size": 4}}

SR = 16000  # the rate a frontend would report


@pytest.fixture
def corpus(tmp_path):
    data = make_corpus(tmp_path, num_spk=4, num_utt=4, seconds=(0.4, 1.2),
                       formats=("wav", "flac", "ogg"))
    entries = raw_entries_from_data_dir(read_data_dir(data))
    return entries, make_spk2id(e["spk"] for e in entries)


def _keys(loader):
    return [k for batch in loader for k in batch["keys"]]


# ------------------------------------------------------------------ splitting
def test_train_epoch_covers_each_utterance_once_across_2_ranks_x_2_workers(corpus):
    entries, spk2id = corpus
    per_rank = {}
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            loader = build_train_loader(entries, "raw", spk2id, SMALL,
                                        {"batch_size": 3, "num_workers": 2, "drop_last": False},
                                        rank=rank, world_size=2, sample_rate=SR)
            loader.set_epoch(epoch)
            keys = _keys(loader)
            per_rank[epoch, rank] = keys
            assert loader.last_stats["samples"] == len(keys) == 8
            assert loader.batches_per_epoch() == 4  # workers hold 4 + 4: batches of 3 + 1 each
            seen += keys
        assert sorted(seen) == sorted(e["key"] for e in entries)  # every one, none twice
    assert per_rank[0, 0] != per_rank[1, 0]  # the shuffle changes with the epoch


def test_set_epoch_reaches_persistent_workers(corpus):
    entries, spk2id = corpus
    loader = build_train_loader(entries, "raw", spk2id, SMALL,
                                {"batch_size": 4, "num_workers": 1, "persistent_workers": True},
                                sample_rate=SR)
    orders = []
    for epoch in (0, 1, 0):
        loader.set_epoch(epoch)
        orders.append(_keys(loader))
        assert loader.last_stats["epoch"] == epoch and loader.last_stats["samples"] == 16
    assert orders[0] != orders[1] and orders[0] == orders[2]  # seeded by the epoch


@pytest.mark.parametrize("policy, counts", [("drop", [7, 7]), ("pad", [8, 8]), ("none", [8, 7])])
def test_rank_balance_policy_on_an_odd_list(corpus, policy, counts):
    entries, spk2id = corpus
    entries = entries[:15]
    args = {**SMALL, "rank_balance": policy}
    shares = [build_train_dataset(entries, "raw", spk2id, args, batch_size=2, rank=r,
                                  world_size=2,
                                  sample_rate=SR).rank_entries(epoch=3) for r in (0, 1)]
    assert [len(s) for s in shares] == counts
    keys = [e["key"] for s in shares for e in s]
    if policy == "pad":
        assert set(keys) == {e["key"] for e in entries}
    else:
        assert len(set(keys)) == len(keys)


def test_eval_shards_cover_each_utterance_once_whole_and_length_sorted(corpus, tmp_path):
    entries, _ = corpus
    make_shard_list(entries, tmp_path / "shards", tmp_path / "shard.list", num_utts_per_shard=4)
    lengths = {e["key"]: sf.info(e["wav"]).frames for e in entries}
    got = {}
    for rank in (0, 1):
        loader = build_eval_loader(tmp_path / "shard.list", "shard", num_workers=2, batch_size=3,
                                   rank=rank, world_size=2, sample_rate=SR)
        for batch in loader:
            n = batch["lengths"].tolist()
            assert batch["wavs"].shape == (len(n), max(n)) and batch["wavs"].dtype == torch.float32
            for i, key in enumerate(batch["keys"]):
                assert key not in got
                got[key] = n[i]
                assert torch.all(batch["wavs"][i, n[i]:] == 0)  # zero padding past the length
        assert loader.last_stats["skipped"] == 0
    assert got == lengths  # whole utterances, each exactly once


def test_eval_order_is_reproducible_and_grouped_by_length(corpus, tmp_path):
    entries, spk2id = corpus
    for e in entries:
        e["dur"] = sf.info(e["wav"]).duration
    path = tmp_path / "raw.list"
    write_raw_list(path, entries)
    runs = []
    for _ in range(2):
        loader = build_eval_loader(path, "raw", batch_size=4, spk2id=spk2id, sample_rate=SR)
        runs.append([(b["keys"], b["lengths"].tolist(), b["labels"].tolist()) for b in loader])
    assert runs[0] == runs[1]
    flat = [n for _, lengths, _ in runs[0] for n in lengths]
    assert flat == sorted(flat)  # durations known: globally sorted, minimal padding
    labels = {k: lab for keys, _, labels in runs[0] for k, lab in zip(keys, labels, strict=True)}
    assert all(labels[e["key"]] == spk2id[e["spk"]] for e in entries)


def test_eval_batches_respect_max_batch_seconds(corpus):
    entries, _ = corpus
    loader = build_eval_loader(entries, "raw", batch_size=16, max_batch_seconds=2.5, sample_rate=SR)
    for batch in loader:
        b, n = batch["wavs"].shape
        assert b == 1 or b * n <= 2.5 * 16000


# ------------------------------------------------------------------ steps
def test_speed_perturbation_changes_length_by_the_factor_and_maps_labels():
    rng = np.random.default_rng(0)
    n, num_spk = 16000, 5
    samples = [{"wav": tone(1.0), "label": 3, "key": str(i)} for i in range(30)]
    out = list(P.speed_perturb(samples, [1.0, 0.9, 1.1], num_spk, rng))
    assert {s["speed"] for s in out} == {1.0, 0.9, 1.1}
    for s in out:
        assert abs(s["wav"].shape[0] - n / s["speed"]) <= 1
        assert s["label"] == 3 + {1.0: 0, 0.9: 1, 1.1: 2}[s["speed"]] * num_spk
    assert parse_dataset_args({"speed_perturb": True}).num_classes(num_spk) == 3 * num_spk
    assert parse_dataset_args({"speed_perturb": False}).num_classes(num_spk) == num_spk
    assert P.speed_classes([1, 1, 1, 0.9, 1.1]) == [1.0, 0.9, 1.1]


def test_crop_is_exact_length_window_or_repeat_pad():
    rng = np.random.default_rng(0)
    long_wav = np.arange(1000, dtype=np.float32)
    short_wav = np.arange(300, dtype=np.float32)
    (a,), (b,) = P.crop([{"wav": long_wav}], 400, rng), P.crop([{"wav": short_wav}], 700, rng)
    assert a["wav"].shape == (400,) and np.all(np.diff(a["wav"]) == 1)  # one contiguous window
    assert b["wav"].shape == (700,)
    assert np.array_equal(b["wav"], np.concatenate([short_wav, short_wav, short_wav[:100]]))


def test_train_batches_have_crop_length_from_num_frms(corpus):
    entries, spk2id = corpus
    args = {**SMALL, "num_frms": 50, "speed_perturb": True}
    del args["crop_seconds"]
    loader = build_train_loader(entries, "raw", spk2id, args, {"batch_size": 4}, sample_rate=SR)
    batches = list(loader)
    assert len(batches) == 4
    for b in batches:
        assert b["wavs"].shape == (4, 49 * 160 + 400) and b["lengths"].tolist() == [8240] * 4
        assert b["labels"].dtype == torch.int64 and int(b["labels"].max()) < 3 * len(spk2id)


def test_shuffle_buffer_yields_each_sample_once():
    out = list(P.shuffle_buffer(({"key": i} for i in range(50)), 8, np.random.default_rng(1)))
    keys = [s["key"] for s in out]
    assert sorted(keys) == list(range(50)) and keys != list(range(50))


def test_resample_brings_other_rates_to_the_model_rate(tmp_path):
    entries = []
    for i, sr in enumerate((8000, 22050, 44100)):
        path = write_audio(tmp_path / f"{sr}.wav", tone(0.5, sr), sr)
        entries.append({"key": f"u{i}", "spk": "s", "wav": str(path)})
    batch = next(iter(build_eval_loader(entries, "raw", batch_size=3, sample_rate=SR)))
    assert all(abs(n - 8000) <= 1 for n in batch["lengths"].tolist())


# ------------------------------------------------------------------ augmentation
@pytest.fixture
def sources(tmp_path):
    rng = np.random.default_rng(7)
    write_audio(tmp_path / "noise" / "white.wav", (0.1 * rng.standard_normal(8000)).astype("f4"))
    write_audio(tmp_path / "noise" / "hum.flac", tone(2.0, freq=50, noise=0.2, seed=3))
    write_audio(tmp_path / "music" / "chord.wav",
                tone(1.5, freq=440, seed=4) + tone(1.5, freq=660, seed=5), 22050)
    for i in range(8):
        if HAVE_ESPEAK:
            espeak(f"speaker number {i} says hello", tmp_path / "speech" / f"s{i}.wav")
        else:
            write_audio(tmp_path / "speech" / f"s{i}.wav", tone(1.0, freq=120 + 20 * i, seed=i))
    rir = np.zeros(2000, np.float32)
    rir[101:] = 0.02 * np.exp(-np.arange(1899) / 300) * rng.standard_normal(1899)
    rir[100] = 0.5  # the direct path
    write_audio(tmp_path / "rir" / "room.wav", rir)
    return {kind: [e["wav"] for e in source_entries_from_folder(tmp_path / folder, kind)]
            for kind, folder in (("noise", "noise"), ("music", "music"), ("babble", "speech"),
                                 ("rir", "rir"))}


@pytest.mark.parametrize("kind, lo, hi", [("noise", 0, 15), ("music", 5, 15), ("babble", 13, 20)])
def test_additive_noise_snr_within_half_db_of_the_drawn_value(sources, kind, lo, hi):
    weights = dict.fromkeys(("reverb", "noise", "music", "babble"), 0.0)
    weights[kind] = 1.0
    aug = Augmenter(sources, 16000, weights=weights)
    rng = np.random.default_rng(0)
    for i in range(10):
        clean = tone(0.5, seed=i)
        mixed, info = aug(clean.copy(), rng)
        assert info["aug"] == kind and lo <= info["snr"] <= hi
        measured = 10 * np.log10(power(clean) / power(mixed - clean))
        assert abs(measured - info["snr"]) < 0.5


def test_reverb_keeps_length_and_aligns_on_the_direct_path(sources):
    aug = Augmenter({"rir": sources["rir"]}, 16000)
    clean = tone(0.5)
    out, info = aug(clean, np.random.default_rng(0))
    assert info == {"aug": "reverb"} and out.shape == clean.shape and np.all(np.isfinite(out))
    # the direct path (the RIR peak) maps sample t to t: high correlation at lag 0
    assert np.corrcoef(out, clean)[0, 1] > 0.5
    delta = np.zeros(300, np.float32)
    delta[120] = 2.0
    assert np.allclose(reverberate(clean, delta), clean, atol=1e-5)


def test_train_pipeline_with_augmentation_from_noise_and_rir_lists(corpus, sources, tmp_path):
    entries, spk2id = corpus
    noise_list, rir_list = tmp_path / "noise.list", tmp_path / "rir.list"
    write_raw_list(noise_list, [{"key": f"{k}{i}", "wav": w, "type": k}
                                for k in ("noise", "music", "babble")
                                for i, w in enumerate(sources[k])])
    write_raw_list(rir_list, [{"key": "r", "wav": sources["rir"][0]}])
    ds = build_train_dataset(entries, "raw", spk2id, {**SMALL, "aug_prob": 1.0}, batch_size=8,
                             noise_list=noise_list, rir_list=rir_list, sample_rate=SR)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        batches = list(ds)
        assert len(batches) == 2 and all(torch.isfinite(b["wavs"]).all() for b in batches)
    assert sorted(ds.augmenter.kinds) == ["babble", "music", "noise", "reverb"]
    seen = Counter(ds.augmenter(tone(0.25, seed=i), np.random.default_rng(i))[1]["aug"]
                   for i in range(40))
    assert set(seen) == {"reverb", "noise", "music", "babble"}


def test_augmentation_without_sources_is_a_config_error(corpus):
    entries, spk2id = corpus
    with pytest.raises(ValueError, match="aug_prob > 0 needs noise_list and/or rir_list"):
        build_train_dataset(entries, "raw", spk2id, {"aug_prob": 0.6}, batch_size=2, sample_rate=SR)


# ------------------------------------------------------------------ bad audio
def _bad_corpus(tmp_path, entries):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "junk.wav").write_bytes(b"RIFF....garbage")
    write_audio(bad / "zero.wav", np.zeros(16000, np.float32))
    sf.write(str(bad / "nan.wav"), np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT")
    write_audio(bad / "short.wav", tone(0.05))
    write_audio(bad / "empty.wav", np.zeros(0, np.float32))
    spk = entries[0]["spk"]
    extra = [{"key": f"bad-{n}", "spk": spk, "wav": str(bad / f"{n}.wav")}
             for n in ("junk", "zero", "nan", "short", "empty", "missing")]
    return entries + extra


def test_bad_files_are_skipped_with_a_warning_naming_them(corpus, tmp_path, caplog):
    entries, spk2id = corpus
    mixed = _bad_corpus(tmp_path, entries)
    args = {**SMALL, "min_duration": 0.2}
    loader = build_train_loader(mixed, "raw", spk2id, args, {"batch_size": 1}, sample_rate=SR)
    with caplog.at_level(logging.WARNING, logger="wespeaker_lap.dataset"):
        keys = _keys(loader)
    assert sorted(keys) == sorted(e["key"] for e in entries)
    for name in ("junk", "zero", "nan", "short", "empty", "missing"):
        assert any(f"{name}.wav" in r.getMessage() for r in caplog.records), name
    assert "6 bad utterances skipped" in caplog.text


def test_bad_file_counts_reach_the_trainer_from_worker_processes(corpus, tmp_path):
    entries, spk2id = corpus
    mixed = _bad_corpus(tmp_path, entries)
    loader = build_train_loader(mixed, "raw", spk2id, {**SMALL, "min_duration": 0.2},
                                {"batch_size": 2, "num_workers": 2, "drop_last": False},
                                sample_rate=SR)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        assert len(_keys(loader)) == len(entries)
        s = loader.last_stats
        assert s["epoch"] == epoch and s["skipped"] == 6 and s["samples"] == len(entries)
        assert (s["missing"], s["unreadable"], s["all_zero"], s["non_finite"], s["too_short"],
                s["empty"]) == (1, 1, 1, 1, 1, 1)


def test_shard_utterance_without_speaker_is_skipped_in_training(corpus, tmp_path):
    entries, spk2id = corpus
    (tar_path,) = make_shard_list(entries[:4], tmp_path / "s", tmp_path / "s.list", 4)
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(tar_path, "w") as tar:
        for m, blob in members[1:]:  # the first member is the first utterance's .spk
            tar.addfile(m, io.BytesIO(blob))
    loader = build_train_loader(tmp_path / "s.list", "shard", spk2id, SMALL,
                                {"batch_size": 1}, sample_rate=SR)
    assert len(_keys(loader)) == 3 and loader.last_stats["unreadable"] == 1


def test_truncated_shard_keeps_what_was_read_and_is_counted(corpus, tmp_path):
    entries, _ = corpus
    tars = make_shard_list(entries[:6], tmp_path / "s", tmp_path / "s.list", 6, shuffle=False)
    blob = tars[0].read_bytes()
    tars[0].write_bytes(blob[: len(blob) * 2 // 3])
    loader = build_eval_loader(tmp_path / "s.list", "shard", sample_rate=SR)
    keys = _keys(loader)
    assert 0 < len(keys) < 6 and loader.last_stats["bad_shard"] == 1


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("args, message", [
    ({"num_frm": 200}, r"unknown key\(s\) \['num_frm'\]; valid: \[.*'num_frms'"),
    ({"shuffle_args": {"size": 3}}, r"shuffle_args: unknown key\(s\) \['size'\]"),
    ({"aug_args": {"snr": {"speech": [1, 2]}}}, r"snr: unknown key\(s\) \['speech'\]"),
    ({"fbank_args": {}}, "configure the model's frontend"),
    ({"aug_prob": 1.5}, "aug_prob: must be <= 1"),
    ({"shuffle": "yes"}, "shuffle: expected true/false"),
    ({"num_frms": 200, "crop_seconds": 2}, "not both"),
    ({"sample_rate": 16000, "resample_rate": 8000}, "disagree"),
    ({"speed_perturb_args": {"factors": [0.9, 1.1]}}, "must include 1.0"),
    ({"rank_balance": "even"}, "rank_balance"),
])
def test_dataset_args_are_checked(args, message):
    with pytest.raises(ValueError, match=message):
        parse_dataset_args(args)


def test_wespeaker_dataset_args_are_understood():
    cfg = parse_dataset_args({
        "sample_num_per_epoch": 0, "shuffle": True, "shuffle_args": {"shuffle_size": 2500},
        "filter": True, "filter_args": {"min_num_frames": 50, "max_num_frames": 400},
        "resample_rate": 16000, "speed_perturb": True, "num_frms": 150, "aug_prob": 0.6,
    })
    assert (cfg.min_duration, cfg.max_duration, cfg.crop_samples) == (0.5, 4.0, 149 * 160 + 400)


def test_dataloader_args_and_speakers_are_checked(corpus):
    entries, spk2id = corpus
    with pytest.raises(ValueError, match=r"dataloader_args: unknown key\(s\) \['batchsize'\]"):
        build_train_loader(entries, "raw", spk2id, SMALL, {"batchsize": 4}, sample_rate=SR)
    with pytest.raises(ValueError, match="not in spk2id"):
        build_train_loader(entries, "raw", {"id10000": 0}, SMALL, {"batch_size": 4}, sample_rate=SR)


def test_sample_num_per_epoch_repeats_the_list(corpus):
    entries, spk2id = corpus
    ds = build_train_dataset(entries, "raw", spk2id, {**SMALL, "sample_num_per_epoch": 40},
                             batch_size=4, sample_rate=SR)
    keys = [e["key"] for e in ds.rank_entries(0)]
    assert len(keys) == 40 and set(Counter(keys).values()) <= {2, 3}


@needs_espeak
def test_espeak_speech_trains_from_shards_at_22khz(tmp_path):
    wav, u2s = {}, {}
    for s, voice in enumerate(("en", "en-us", "de")):
        for u in range(3):
            key = f"spk{s}/utt{u}"
            wav[key] = str(espeak(f"this is sentence {u} from speaker {s}",
                                  tmp_path / "speech" / f"{s}_{u}.wav", voice))
            u2s[key] = f"spk{s}"
    data = write_data_dir(tmp_path / "data", wav, u2s)
    entries = raw_entries_from_data_dir(data)
    make_shard_list(entries, tmp_path / "shards", tmp_path / "shard.list", 4)
    loader = build_train_loader(tmp_path / "shard.list", "shard", make_spk2id(u2s.values()),
                                {"crop_seconds": 1.0, "speed_perturb": True},
                                {"batch_size": 3, "drop_last": False}, sample_rate=SR)
    batches = list(loader)
    assert sum(len(b["keys"]) for b in batches) == 9
    assert all(b["wavs"].shape[1] == 16000 for b in batches)
