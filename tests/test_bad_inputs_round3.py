"""Issue 28 (reliability, round 3): each bad input found there, pinned so it stays fixed.

Kaldi ``segments`` end to end (validate, fix, raw and shard lists, the loaders,
extraction, pre-training, the tools that refuse it), and the "weak" answers to
bad input that became clear errors. Each test fails on the code before the fix.
"""

from __future__ import annotations

import json

import kaldiio
import numpy as np
import pytest
import soundfile as sf
from data_helpers import make_segments_dir, make_tiny_model_dir, tone, write_audio

from wespeaker_lap.bin import extract, fix_data_dir, make_raw_list, make_shard_list
from wespeaker_lap.bin import validate_data_dir as validate_bin
from wespeaker_lap.dataset import audio
from wespeaker_lap.dataset.datadir import read_data_dir, validate_data_dir
from wespeaker_lap.dataset.dataset import build_eval_loader
from wespeaker_lap.frontend.testing import tiny_ssl_config
from wespeaker_lap.io.checkpoints import save_weights
from wespeaker_lap.models import build_extractor
from wespeaker_lap.pretrain.features import load_corpus

SR = 16000
BAD_SEGMENTS = ("spk0-rec0-c rec0 1.50 2.50",   # overlaps spk0-rec0-a (0.2-1.7)
                "spk1-rec1-z rec1 3.00 9.00",   # past the end of the 4 s recording
                "spk2-rec2-y rec2 1.90 1.80",   # ends before it starts
                "spk2-rec9-x rec9 0.00 1.00")   # no such recording in wav.scp


@pytest.fixture
def seg_dir(tmp_path):
    return make_segments_dir(tmp_path)


@pytest.fixture
def model_dir(tmp_path):
    return make_tiny_model_dir(tmp_path / "exp")


def _line_of(seg_dir, utt):
    lines = (seg_dir / "segments").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.startswith(utt + " "))


# ------------------------------------------------------------------ segments: validate / fix
def test_validate_accepts_a_segments_dir_keyed_by_recording(seg_dir):
    assert validate_data_dir(seg_dir) == []
    assert read_data_dir(seg_dir).utts == sorted(read_data_dir(seg_dir).utt2spk)


@pytest.mark.parametrize("line,what", [
    (BAD_SEGMENTS[0], "overlaps 'spk0-rec0-a'"),
    (BAD_SEGMENTS[1], "out of range: 3.00-9.00 s, but recording 'rec1' lasts 4.000 s"),
    (BAD_SEGMENTS[2], "out of range: end 1.80 <= start 1.90"),
    (BAD_SEGMENTS[3], "unknown recording 'rec9'"),
])
def test_validate_names_the_line_of_a_bad_segment(tmp_path, line, what, capsys):
    d = make_segments_dir(tmp_path, extra_lines=(line,))
    utt = line.split()[0]
    problems = validate_data_dir(d)
    hit = [p for p in problems if what in p]
    assert hit and f"segments:{_line_of(d, utt)}:" in hit[0], problems
    assert validate_bin.main([str(d)]) == 1
    assert what in capsys.readouterr().err


def test_read_data_dir_refuses_bad_segments_naming_the_line(tmp_path):
    d = make_segments_dir(tmp_path, extra_lines=(BAD_SEGMENTS[3],))
    with pytest.raises(ValueError, match=r"segments:\d+: 'spk2-rec9-x': unknown recording"):
        read_data_dir(d)


def test_fix_keeps_the_good_segments_and_drops_the_bad_ones(tmp_path, capsys):
    d = make_segments_dir(tmp_path, extra_lines=BAD_SEGMENTS)
    assert fix_data_dir.main([str(d)]) == 0
    kept = [line.split()[0] for line in (d / "segments").read_text().splitlines()]
    assert kept == sorted(f"spk{r}-rec{r}-{t}" for r in range(3) for t in "ab")
    assert sorted((d / "utt2spk").read_text().split()[::2]) == kept
    assert [line.split()[0] for line in (d / "wav.scp").read_text().splitlines()] == \
        ["rec0", "rec1", "rec2"]
    assert validate_data_dir(d) == []
    assert (d / ".backup" / "segments").is_file()


def test_fix_never_empties_a_data_dir_of_recordings_without_its_segments(seg_dir, capsys):
    """The issue's scenario: wav.scp keyed by recording, utt2spk by segment, no segments."""
    (seg_dir / "segments").unlink()
    before = {p.name: p.read_bytes() for p in seg_dir.iterdir()}
    assert fix_data_dir.main([str(seg_dir)]) == 1
    err = capsys.readouterr().err
    assert "would leave no utterances, so nothing was changed" in err
    assert "segments file missing" in err
    assert {p.name: p.read_bytes() for p in seg_dir.iterdir()} == before  # no .backup either


def test_validate_fails_an_empty_data_dir(tmp_path, capsys):
    d = tmp_path / "empty"
    d.mkdir()
    for name in ("wav.scp", "utt2spk", "spk2utt"):
        (d / name).write_text("")
    assert validate_bin.main([str(d)]) == 1
    assert "no utterances" in capsys.readouterr().err


def _dir_with_a_spaced_key(tmp_path):
    """A data dir whose one utterance key, ``spk1 utt1``, holds a space."""
    d = tmp_path / "d"
    d.mkdir()
    w = write_audio(tmp_path / "a.wav", tone(0.5))
    (d / "wav.scp").write_text(f"spk1 utt1 {w}\n")
    (d / "utt2spk").write_text("spk1 utt1 spk1\n")
    (d / "spk2utt").write_text("spk1 spk1 utt1\n")
    return d


def test_a_key_with_a_space_is_reported_as_such(tmp_path):
    d = _dir_with_a_spaced_key(tmp_path)
    problems = "\n".join(validate_data_dir(d))
    assert "the key 'spk1 utt1' contains a space" in problems


# ------------------------------------------------------------------ segments: lists, loaders
def test_make_raw_list_writes_each_segments_start_and_end(seg_dir, tmp_path):
    out = tmp_path / "raw.list"
    assert make_raw_list.main([str(seg_dir), str(out)]) == 0
    entries = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(entries) == 6
    first = entries[0]
    assert (first["key"], first["start"], first["end"]) == ("spk0-rec0-a", 0.2, 1.7)
    assert first["wav"].endswith("rec0.wav")


def _recording(seg_dir, rec):
    wav, _ = sf.read(read_data_dir(seg_dir).wav[rec], dtype="float32")
    return wav


def test_the_loader_reads_only_the_segment_by_seeking(seg_dir, tmp_path, monkeypatch):
    out = tmp_path / "raw.list"
    make_raw_list.main([str(seg_dir), str(out)])

    def whole_file(*a, **k):
        raise AssertionError("the whole recording was read")

    monkeypatch.setattr("wespeaker_lap.dataset.processor.read_bytes", whole_file)
    loader = build_eval_loader(str(out), "raw", sample_rate=SR, batch_size=8)
    got = {}
    for batch in loader:
        for k, w, n in zip(batch["keys"], batch["wavs"], batch["lengths"], strict=True):
            got[k] = w[: int(n)].numpy()
    assert len(got) == 6
    rec0 = _recording(seg_dir, "rec0")
    np.testing.assert_array_equal(got["spk0-rec0-b"], rec0[int(2.0 * SR):int(3.5 * SR)])


def test_the_training_loader_crops_inside_each_segment(seg_dir, tmp_path, monkeypatch):
    from wespeaker_lap.dataset.dataset import build_train_loader
    from wespeaker_lap.dataset.lists import raw_entries_from_data_dir

    def whole_file(*a, **k):
        raise AssertionError("the whole recording was read")

    monkeypatch.setattr("wespeaker_lap.dataset.processor.read_bytes", whole_file)
    entries = raw_entries_from_data_dir(read_data_dir(seg_dir))
    spk2id = {f"spk{r}": r for r in range(3)}
    loader = build_train_loader(entries, "raw", spk2id, {"crop_seconds": 1.0, "shuffle": False,
                                                         "min_duration": 0.1},
                                {"batch_size": 6}, sample_rate=SR)
    (batch,) = list(loader)
    assert batch["wavs"].shape == (6, SR) and loader.last_stats["skipped"] == 0
    rec0 = _recording(seg_dir, "rec0")
    seg_b = rec0[int(2.0 * SR):int(3.5 * SR)]
    crop = batch["wavs"][int(np.flatnonzero(batch["labels"].numpy() == 0)[1])].numpy()
    # the crop is a window of segment b, not of the recording around it
    heads = np.lib.stride_tricks.sliding_window_view(seg_b, 16)
    (start,) = np.flatnonzero(np.abs(heads - crop[:16]).max(axis=1) < 1e-6)[:1]
    np.testing.assert_allclose(crop, seg_b[start:start + SR], atol=1e-6)


def test_load_segment_past_the_end_is_out_of_range(seg_dir):
    path = read_data_dir(seg_dir).wav["rec0"]
    with pytest.raises(audio.BadAudio, match="out_of_range"):
        audio.load_segment(path, 5.0, 6.0)


def test_make_shard_list_cuts_the_segments_into_the_shards(seg_dir, tmp_path):
    lst = tmp_path / "shard.list"
    assert make_shard_list.main([str(seg_dir), str(tmp_path / "shards"), str(lst),
                                 "--num-utts-per-shard", "4"]) == 0
    loader = build_eval_loader(str(lst), "shard", sample_rate=SR, batch_size=8)
    got = {k: w[: int(n)].numpy() for b in loader
           for k, w, n in zip(b["keys"], b["wavs"], b["lengths"], strict=True)}
    assert len(got) == 6
    rec1 = _recording(seg_dir, "rec1")
    np.testing.assert_array_equal(got["spk1-rec1-a"], rec1[int(0.2 * SR):int(1.7 * SR)])


def test_extract_embeds_each_segment_not_the_recording(seg_dir, tmp_path, model_dir):
    """A segment's embedding is that of a file holding just its samples."""
    emb = tmp_path / "emb"
    assert extract.main(["--model_dir", str(model_dir), "--data", str(seg_dir), "--embed_dir",
                         str(emb), "--no_progress", "--num_workers", "0"]) == 0
    vecs = dict(kaldiio.load_scp(str(emb / "xvector.scp")))
    assert sorted(vecs) == sorted(read_data_dir(seg_dir).utt2spk)
    cut = write_audio(tmp_path / "cut" / "a.wav",
                      _recording(seg_dir, "rec2")[int(2.0 * SR):int(3.5 * SR)])
    one = tmp_path / "one"
    one.mkdir()
    (one / "wav.scp").write_text(f"u {cut}\n")
    (one / "utt2spk").write_text("u s\n")
    (one / "spk2utt").write_text("s u\n")
    assert extract.main(["--model_dir", str(model_dir), "--data", str(one), "--embed_dir",
                         str(tmp_path / "emb1"), "--no_progress", "--num_workers", "0"]) == 0
    ref = dict(kaldiio.load_scp(str(tmp_path / "emb1" / "xvector.scp")))["u"]
    np.testing.assert_allclose(vecs["spk2-rec2-b"], ref, rtol=1e-4, atol=1e-5)


def test_extract_on_an_empty_data_dir_names_the_dir(tmp_path, model_dir, capsys):
    d = tmp_path / "empty"
    d.mkdir()
    for name in ("wav.scp", "utt2spk", "spk2utt"):
        (d / name).write_text("")
    assert extract.main(["--model_dir", str(model_dir), "--data", str(d), "--embed_dir",
                         str(tmp_path / "emb"), "--no_progress"]) == 1
    assert f"{d}: empty data dir" in capsys.readouterr().err


def test_pretrain_corpus_reads_segments_and_resamples_8khz(seg_dir, tmp_path):
    corpus = load_corpus([str(seg_dir / "wav.scp")], min_seconds=1.0)
    assert corpus.keys == sorted(read_data_dir(seg_dir).utt2spk)
    assert all(len(w) == int(1.5 * SR) for w in corpus.wavs)
    narrow = write_audio(tmp_path / "n" / "tel.wav", tone(2.0, 8000), 8000)
    scp = tmp_path / "n" / "wav.scp"
    scp.write_text(f"tel {narrow}\n")
    corpus = load_corpus([str(scp)], min_seconds=1.0)
    assert abs(len(corpus.wavs[0]) - 2 * SR) <= 2  # resampled to 16 kHz, not refused


def test_pretrain_ssl_names_a_missing_wav_scp(tmp_path, capsys):
    from wespeaker_lap.bin import pretrain_ssl

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model_args: {}\n")
    assert pretrain_ssl.main(["--config", str(cfg), "--wav_scp", str(tmp_path / "missing"),
                              "--out", str(tmp_path / "out")]) == 2
    assert f"no such file: {tmp_path / 'missing'}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_embed_wav_scp_refuses_a_dir_with_segments_naming_the_file(seg_dir, tmp_path, capsys):
    from wespeaker_lap.cli.main import main as cli

    rc = cli(["embed", "--model", str(tmp_path / "nomodel"), "--wav_scp",
              str(seg_dir / "wav.scp"), "--out", str(tmp_path / "x.npy")])
    assert rc != 0
    assert f"{seg_dir / 'segments'}: embed --wav_scp does not read Kaldi segments" in \
        capsys.readouterr().err


def test_make_raw_list_type_refuses_a_dir_with_segments(seg_dir, tmp_path, capsys):
    assert make_raw_list.main(["--type", "noise", str(seg_dir), str(tmp_path / "n.list")]) == 1
    assert f"{seg_dir / 'segments'}" in capsys.readouterr().err


# ------------------------------------------------------------------ config values
def _set(cfg, dotted, value):
    node = cfg
    *path, last = dotted.split(".")
    for p in path:
        node = node[p]
    node[last] = value


CONFIG_RANGES = {
    "final_margin -0.5": ("margin_update.final_margin", -0.5, "margin_update.final_margin"),
    "weight_decay -1": ("optimizer_args.weight_decay", -1, "optimizer_args.weight_decay"),
    "heads 0": ("model_args.heads", 0, "model_args.heads"),
    "embed_dim -4": ("model_args.embed_dim", -4, "model_args.embed_dim"),
    "ssl hidden_size '32'": ("frontend_args.config.hidden_size", "32",
                             "frontend_args.config.hidden_size"),
    "ssl model_type bert": ("frontend_args.config.model_type", "bert",
                            "unsupported SSL model type 'bert'"),
    "ssl path missing": ("frontend_args", {"model_name_or_path": "./no/such/ssl"},
                         "SSL checkpoint directory not found: './no/such/ssl'"),
}


@pytest.fixture
def train_corpus(tmp_path):
    from train_helpers import make_corpus

    return make_corpus(tmp_path / "corpus", num_spk=2, num_utt=4, seconds=0.6)


def _train(tmp_path, cfg, *extra):
    from train_helpers import write_config

    from wespeaker_lap.bin import train as train_bin

    return train_bin.main(["--config", str(write_config(tmp_path / "c.yaml", cfg)),
                           "--device", "cpu", *extra])


@pytest.mark.parametrize("case", sorted(CONFIG_RANGES))
def test_a_config_value_out_of_range_is_refused_before_exp_dir(case, tmp_path, train_corpus,
                                                              capsys):
    from train_helpers import tiny_config

    key, value, needle = CONFIG_RANGES[case]
    exp = tmp_path / "exp"
    cfg = tiny_config(exp, *train_corpus, num_epochs=1)
    _set(cfg, key, value)
    rc = _train(tmp_path, cfg)
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert needle in err and "Traceback" not in err
    assert not exp.exists()


@pytest.mark.parametrize("text,needle", [
    ("a: 1\nb: [1, 2\nc: 3\n", "c.yaml:3:2: not valid YAML"),
    ("a: !!python/object/apply:os.system ['echo pwned']\n", "python tags are refused"),
])
def test_malformed_yaml_and_python_tags_name_the_file_and_line(text, needle, tmp_path, capsys):
    from wespeaker_lap.bin import train as train_bin

    (tmp_path / "c.yaml").write_text(text)
    assert train_bin.main(["--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_a_python_tag_in_a_model_dirs_config_is_a_clean_error(model_dir, seg_dir, tmp_path,
                                                              capsys):
    (model_dir / "config.yaml").write_text("model: !!python/object/apply:os.getcwd []\n")
    assert extract.main(["--model_dir", str(model_dir), "--data", str(seg_dir), "--embed_dir",
                         str(tmp_path / "e")]) == 1
    err = capsys.readouterr().err
    assert "config.yaml:1:" in err and "python tags are refused" in err
    assert "Traceback" not in err


def test_data_type_shard_with_a_raw_list_is_refused_before_exp_dir(tmp_path, train_corpus,
                                                                   capsys):
    from train_helpers import tiny_config

    exp = tmp_path / "exp"
    assert _train(tmp_path, tiny_config(exp, *train_corpus, data_type="shard")) == 2
    err = capsys.readouterr().err
    assert "a raw list, not a shard list; set data_type: raw" in err
    assert not exp.exists()


def test_pretrain_model_args_of_the_wrong_type_are_a_config_error():
    from wespeaker_lap.checks import ConfigError
    from wespeaker_lap.pretrain.hubert import build_config

    with pytest.raises(ConfigError, match=r"model_args.hidden_size: expected an int, got '32'"):
        build_config({"hidden_size": "32"})


# ------------------------------------------------------------------ checkpoints
def _other_model_weights(path):
    cfg = {"frontend": "ssl", "frontend_args": {"config": tiny_ssl_config("wavlm")},
           "model": "MHFA", "model_args": {"embed_dim": 8, "head_nb": 2, "compression_dim": 8}}
    save_weights(build_extractor(cfg), path)
    return path


def test_resume_from_another_models_checkpoint_is_refused_before_exp_dir(tmp_path, train_corpus,
                                                                         capsys):
    from train_helpers import tiny_config

    from wespeaker_lap.io.checkpoints import checkpoint_path

    exp = tmp_path / "exp"
    foreign = _other_model_weights(tmp_path / "other" / "model_1.pt")
    capsys.readouterr()  # (a root handler left by an earlier entry point may complain)
    rc = _train(tmp_path, tiny_config(exp, *train_corpus, num_epochs=2,
                                      checkpoint=str(foreign)))
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err[-2000:]
    assert str(foreign) in err
    assert not checkpoint_path(exp / "models", 2).exists()


def test_checkpoint_given_a_directory_is_a_clean_error(tmp_path, train_corpus, capsys):
    from train_helpers import tiny_config

    exp = tmp_path / "exp"
    d = tmp_path / "adir"
    d.mkdir()
    rc = _train(tmp_path, tiny_config(exp, *train_corpus, checkpoint=str(d)))
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err[-2000:]
    assert str(d) in err


def test_model_init_from_another_model_is_refused_unless_told(tmp_path, train_corpus, capsys):
    from train_helpers import tiny_config

    exp = tmp_path / "exp"
    foreign = _other_model_weights(tmp_path / "other" / "avg_model.pt")
    capsys.readouterr()
    cfg = tiny_config(exp, *train_corpus, num_epochs=1, model_init=str(foreign))
    assert _train(tmp_path, cfg) == 2
    err = capsys.readouterr().err
    assert f"model_init {foreign}: these weights are another model's" in err
    assert "--model_init_strict false" in err and not exp.exists()
    assert _train(tmp_path, cfg, "--model_init_strict", "false") == 0


def test_random_bytes_as_a_checkpoint_never_advise_weights_only_false(tmp_path):
    from wespeaker_lap.io.checkpoints import CheckpointError, read_weights

    path = tmp_path / "rnd.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError) as e:
        read_weights(path)
    assert str(path) in str(e.value) and "weights_only" not in str(e.value)


def test_extract_with_another_models_weights_names_the_file(model_dir, seg_dir, tmp_path,
                                                           capsys):
    foreign = _other_model_weights(tmp_path / "other.pt")
    capsys.readouterr()
    assert extract.main(["--model_dir", str(model_dir), "--model_path", str(foreign), "--data",
                         str(seg_dir), "--embed_dir", str(tmp_path / "e")]) == 1
    err = capsys.readouterr().err
    assert f"{foreign}: these weights do not fit the model" in err


# ------------------------------------------------------------------ disk full
def _enospc(*a, **k):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def _half_written_ark(path, *a, **k):
    with open(path, "wb") as f:
        f.write(b"partial")
    _enospc()


def _assert_named_full(text, path):
    assert "no space left on device" in text and str(path) in text and "MiB free there" in text
    assert "Traceback" not in text


def test_a_full_disk_during_extraction_names_the_file_and_leaves_nothing(
        model_dir, seg_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(kaldiio, "save_ark", _half_written_ark)
    emb = tmp_path / "emb"
    assert extract.main(["--model_dir", str(model_dir), "--data", str(seg_dir), "--embed_dir",
                         str(emb), "--no_progress", "--num_workers", "0"]) == 1
    _assert_named_full(capsys.readouterr().err, emb / "xvector.ark")
    assert not list(emb.glob("xvector.*")) and not list(emb.glob(".*.tmp"))


def test_a_full_disk_during_embed_out_ark_names_the_file(model_dir, tmp_path, monkeypatch,
                                                         capsys):
    from wespeaker_lap.cli.main import main as cli

    wav = write_audio(tmp_path / "a.wav", tone(1.0))
    monkeypatch.setattr(kaldiio, "save_ark", _half_written_ark)
    out = tmp_path / "out" / "x.ark"
    assert cli(["embed", "--model", str(model_dir), str(wav), "--out", str(out)]) != 0
    _assert_named_full(capsys.readouterr().err, out)
    assert not out.exists() and not list(out.parent.glob(".*.tmp"))


class _FullFile:
    """A text file whose writes fail as on a full disk."""

    def __init__(self, path, *a, **k):
        self._f = open(path, *a, **k)  # noqa: SIM115 - closed in __exit__

    def write(self, text):
        _enospc()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def test_a_full_disk_during_scoring_names_the_file(tmp_path, monkeypatch, capsys):
    from wespeaker_lap.bin import score as score_bin
    from wespeaker_lap.io.xvectors import write_xvectors

    rng = np.random.default_rng(0)
    write_xvectors(tmp_path / "emb", {k: rng.standard_normal(4) for k in ("a", "b")})
    (tmp_path / "trials").write_text("a b target\nb a nontarget\n")
    out = tmp_path / "scores"
    monkeypatch.setattr("wespeaker_lap.io.files.open", _FullFile, raising=False)
    assert score_bin.main(["--embeddings", str(tmp_path / "emb" / "xvector.scp"), "--trials",
                           str(tmp_path / "trials"), "--output_dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert "no space left on device" in err and str(out) in err and "MiB free there" in err
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_a_full_disk_during_make_shard_list_names_the_shard(seg_dir, tmp_path, monkeypatch,
                                                            capsys):
    import wespeaker_lap.dataset.lists as lists

    monkeypatch.setattr(lists, "_add_bytes", _enospc)
    lst = tmp_path / "shard.list"
    assert make_shard_list.main([str(seg_dir), str(tmp_path / "shards"), str(lst),
                                 "--nj", "1"]) == 1
    err = capsys.readouterr().err
    assert "no space left on device" in err and "shards_000000.tar" in err
    assert "MiB free there" in err
    assert not lst.exists() and not list((tmp_path / "shards").iterdir())


def test_a_full_disk_during_average_model_is_named_without_a_traceback(tmp_path, monkeypatch,
                                                                       capsys):
    import torch

    from wespeaker_lap.bin import average_model
    from wespeaker_lap.io.checkpoints import checkpoint_path

    models = tmp_path / "models"
    for e in (1, 2):
        save_weights({"w": torch.full((2,), float(e))}, checkpoint_path(models, e))

    def full(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        _enospc()

    monkeypatch.setattr(torch, "save", full)
    dst = models / "avg_model.pt"
    assert average_model.main(["--dst_model", str(dst), "--src_path", str(models),
                               "--num", "2"]) == 1
    _assert_named_full(capsys.readouterr().err, dst)
    assert not dst.exists() and not list(models.glob(".*.tmp"))


def test_average_model_over_two_models_names_both_files(tmp_path, capsys):
    import torch

    from wespeaker_lap.bin import average_model
    from wespeaker_lap.io.checkpoints import checkpoint_path

    models = tmp_path / "models"
    save_weights({"w": torch.zeros(2)}, checkpoint_path(models, 1))
    save_weights({"w": torch.zeros(3)}, checkpoint_path(models, 2))
    assert average_model.main(["--dst_model", str(models / "avg.pt"), "--src_path", str(models),
                               "--num", "2"]) == 1
    err = capsys.readouterr().err
    assert "model_1.pt" in err and "model_2.pt" in err and "'w' is (3,)" in err


# ------------------------------------------------------------------ scoring
def _emb(tmp_path, keys, zero=()):
    from wespeaker_lap.io.xvectors import write_xvectors

    rng = np.random.default_rng(1)
    vecs = {k: (np.zeros(4) if k in zero else rng.standard_normal(4)) for k in keys}
    write_xvectors(tmp_path / "emb", vecs)
    return tmp_path / "emb" / "xvector.scp"


def test_duplicate_trials_are_scored_with_a_warning_giving_the_count(tmp_path, capsys):
    from wespeaker_lap.bin import score as score_bin

    scp = _emb(tmp_path, ["a", "b", "c"])
    (tmp_path / "trials").write_text("a b target\na c nontarget\na b target\na b target\n")
    assert score_bin.main(["--embeddings", str(scp), "--trials", str(tmp_path / "trials"),
                           "--output_dir", str(tmp_path / "s")]) == 0
    assert "2 repeated trial(s)" in capsys.readouterr().err
    assert len((tmp_path / "s" / "trials.score").read_text().splitlines()) == 4


def _score_lines(n_tar, n_non, rng):
    lines = [f"e{i} t{i} {rng.normal(1.0):.6f} target" for i in range(n_tar)]
    lines += [f"e{i} n{i} {rng.normal(-1.0):.6f} nontarget" for i in range(n_non)]
    return lines


def test_compute_metrics_counts_a_duplicated_score_line_once(tmp_path, capsys):
    from wespeaker_lap.bin import compute_metrics as cm

    lines = _score_lines(18, 30, np.random.default_rng(3))
    (tmp_path / "unique.score").write_text("\n".join(lines) + "\n")
    (tmp_path / "dup.score").write_text("\n".join(lines + lines[:2]) + "\n")
    for name in ("unique", "dup"):
        assert cm.main([str(tmp_path / f"{name}.score"), "--json",
                        str(tmp_path / f"{name}.json")]) == 0
    assert "2 repeated trial line(s)" in capsys.readouterr().err
    uniq = json.loads((tmp_path / "unique.json").read_text())
    dup = json.loads((tmp_path / "dup.json").read_text())
    assert list(dup.values())[0] == list(uniq.values())[0]


def test_compute_metrics_refuses_repeats_that_disagree(tmp_path, capsys):
    from wespeaker_lap.bin import compute_metrics as cm

    lines = _score_lines(3, 3, np.random.default_rng(3))
    lines.append(lines[0].replace("target", "nontarget"))
    (tmp_path / "x.score").write_text("\n".join(lines) + "\n")
    assert cm.main([str(tmp_path / "x.score")]) == 1
    assert "appears twice with different scores or labels" in capsys.readouterr().err


def test_an_all_zero_embedding_is_an_error_naming_the_key(tmp_path, capsys):
    from wespeaker_lap.bin import score as score_bin

    scp = _emb(tmp_path, ["a", "b", "z"], zero=("z",))
    (tmp_path / "trials").write_text("a b target\na z nontarget\n")
    assert score_bin.main(["--embeddings", str(scp), "--trials", str(tmp_path / "trials"),
                           "--output_dir", str(tmp_path / "s")]) == 1
    assert "the embedding of 'z' is all zeros" in capsys.readouterr().err


def test_qmf_without_both_labels_names_the_score_file(tmp_path):
    from wespeaker_lap.scoring.calibration import QualitySources, fit_qmf_file

    path = tmp_path / "tgt_only.score"
    path.write_text("a b 0.5 target\nb c 0.7 target\n")
    with pytest.raises(ValueError, match=f"{path}: QMF needs target and nontarget"):
        fit_qmf_file(path, QualitySources(), features=("score",))


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"format": "FORMAT"}'])
def test_a_corrupt_qmf_json_names_the_file(text, tmp_path):
    from wespeaker_lap.scoring.calibration import MODEL_FORMAT, QMFCalibrator

    path = tmp_path / "qmf.json"
    path.write_text(text.replace("FORMAT", MODEL_FORMAT))
    with pytest.raises(ValueError, match=str(path)):
        QMFCalibrator.load(path)


# ------------------------------------------------------------------ CLI arguments
def _wavs(tmp_path):
    return [write_audio(tmp_path / "w" / f"{i}.wav", tone(1.0, seed=i)) for i in range(2)]


def test_verify_refuses_a_threshold_a_cosine_cannot_reach(model_dir, tmp_path, capsys):
    from wespeaker_lap.cli.main import main as cli

    a, b = _wavs(tmp_path)
    assert cli(["verify", "--model", str(model_dir), str(a), str(b), "--threshold", "2"]) == 2
    assert "--threshold: 2 can never be met" in capsys.readouterr().err
    assert cli(["verify", "--model", str(model_dir), str(a), str(b), "--threshold", "0.5"]) == 0


@pytest.mark.parametrize("opt,value,needle", [
    ("--batch_size", "0", "--batch_size: must be >= 1"),
    ("--max_batch_seconds", "-1", "--max_batch_seconds: must be > 0"),
    ("--threads", "0", "--threads: must be >= 1"),
    ("--num_workers", "-1", "--num_workers: must be >= 0"),
])
def test_extract_refuses_bad_options_before_the_model_loads(opt, value, needle, model_dir,
                                                            seg_dir, tmp_path, monkeypatch,
                                                            capsys):
    def no_load(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("wespeaker_lap.utils.extraction.load_trained_extractor", no_load)
    assert extract.main(["--model_dir", str(model_dir), "--data", str(seg_dir), "--embed_dir",
                         str(tmp_path / "e"), opt, value]) == 1
    assert needle in capsys.readouterr().err


def test_extract_refuses_an_embed_dir_that_is_a_file_before_the_model_loads(
        model_dir, seg_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("wespeaker_lap.utils.extraction.load_trained_extractor", _enospc)
    f = tmp_path / "afile"
    f.write_text("x")
    assert extract.main(["--model_dir", str(model_dir), "--data", str(seg_dir), "--embed_dir",
                         str(f)]) == 1
    assert f"--embed_dir {f} is a file" in capsys.readouterr().err


def test_extract_model_path_a_directory_says_so(model_dir, seg_dir, tmp_path, capsys):
    assert extract.main(["--model_dir", str(model_dir), "--model_path", str(model_dir),
                         "--data", str(seg_dir), "--embed_dir", str(tmp_path / "e")]) == 1
    assert f"--model_path {model_dir} is a directory" in capsys.readouterr().err


@pytest.mark.parametrize("tool", ["score", "score_norm"])
def test_an_output_dir_that_is_a_file_is_refused(tool, tmp_path, capsys):
    from wespeaker_lap.bin import score as score_bin
    from wespeaker_lap.bin import score_norm as sn

    scp = _emb(tmp_path, ["a", "b"])
    (tmp_path / "trials").write_text("a b target\n")
    f = tmp_path / "afile"
    f.write_text("x")
    if tool == "score":
        rc = score_bin.main(["--embeddings", str(scp), "--trials", str(tmp_path / "trials"),
                             "--output_dir", str(f)])
    else:
        (tmp_path / "x.score").write_text("a b 0.5 target\n")
        rc = sn.main(["--scores", str(tmp_path / "x.score"), "--embeddings", str(scp),
                      "--cohort_embeddings", str(scp), "--top_n", "2", "--output_dir", str(f)])
    assert rc == 1 and f"--output_dir {f} is a file" in capsys.readouterr().err


def test_validate_refuses_a_negative_min_duration(seg_dir, capsys):
    with pytest.raises(SystemExit) as e:
        validate_bin.main([str(seg_dir), "--decode", "--min_duration", "-1"])
    assert e.value.code == 2
    assert "--min_duration must be >= 0" in capsys.readouterr().err


def test_embed_wav_scp_runs_piped_entries_only_with_allow_pipes(model_dir, tmp_path, capsys):
    import shlex

    from wespeaker_lap.cli.main import main as cli

    a, b = _wavs(tmp_path)
    scp = tmp_path / "wav.scp"
    scp.write_text(f"a {a}\nb cat {shlex.quote(str(b))} |\n")
    out = tmp_path / "e.npy"
    assert cli(["embed", "--model", str(model_dir), "--wav_scp", str(scp), "--out",
                str(out)]) == 2
    assert "'b': piped wav.scp entries ('cmd |') need --allow_pipes" in capsys.readouterr().err
    assert cli(["embed", "--model", str(model_dir), "--wav_scp", str(scp), "--out", str(out),
                "--allow_pipes"]) == 0
    ref = tmp_path / "ref.npy"
    assert cli(["embed", "--model", str(model_dir), str(a), str(b), "--out", str(ref)]) == 0
    np.testing.assert_allclose(np.load(out), np.load(ref), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ "no such file" that exists
@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_directory_or_fifo_given_as_a_wav_says_what_it_is(kind, model_dir, tmp_path, capsys):
    import os

    from wespeaker_lap.cli.main import main as cli

    (a, _) = _wavs(tmp_path)
    odd = tmp_path / "odd.wav"
    if kind == "directory":
        odd.mkdir()
    else:
        os.mkfifo(odd)
    assert cli(["similarity", "--model", str(model_dir), str(a), str(odd)]) == 2
    err = capsys.readouterr().err
    assert f"{odd} is {'a directory' if kind == 'directory' else 'a FIFO'}" in err
    assert "no such" not in err
    with pytest.raises(audio.BadAudio, match="a directory|a FIFO"):
        audio.read_bytes(str(odd))  # the data pipeline: no open() that would block on a FIFO


def test_validate_says_a_wav_scp_entry_is_a_directory(tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    (tmp_path / "adir.wav").mkdir()
    (d / "wav.scp").write_text(f"u1 {tmp_path / 'adir.wav'}\n")
    (d / "utt2spk").write_text("u1 s1\n")
    (d / "spk2utt").write_text("s1 u1\n")
    assert validate_bin.main([str(d)]) == 1
    assert f"'u1': {tmp_path / 'adir.wav'} is a directory, not a file" in capsys.readouterr().err


def test_a_directory_given_as_a_score_file_says_so(tmp_path, capsys):
    from wespeaker_lap.bin import compute_metrics as cm

    d = tmp_path / "scores"
    d.mkdir()
    assert cm.main([str(d)]) == 1
    assert f"{d} is a directory, not a score file" in capsys.readouterr().err


def test_cli_onnx_given_a_directory_says_so(tmp_path, capsys):
    from wespeaker_lap.cli.main import main as cli

    (a, b) = _wavs(tmp_path)
    assert cli(["similarity", "--onnx", str(tmp_path), str(a), str(b)]) == 2
    assert f"--onnx {tmp_path} is a directory" in capsys.readouterr().err


# ------------------------------------------------------------------ shards
def _tar(path, members):
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _wav_bytes(seconds=0.5):
    import io

    buf = io.BytesIO()
    sf.write(buf, tone(seconds), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_tar_members_escaping_the_shard_are_skipped_with_a_count(tmp_path, caplog):
    from wespeaker_lap.dataset.processor import open_shards
    from wespeaker_lap.dataset.stats import PipelineStats

    w = _wav_bytes()
    tar = _tar(tmp_path / "s.tar", [("ok.spk", b"s1"), ("ok.wav", w),
                                     ("../../escape.spk", b"s1"), ("../../escape.wav", w),
                                     ("/abs/x.spk", b"s1"), ("/abs/x.wav", w)])
    stats = PipelineStats()
    with caplog.at_level("WARNING"):
        keys = [s["key"] for s in open_shards([{"shard": str(tar)}], stats)]
    assert keys == ["ok"]
    assert stats.snapshot()["unsafe_member"] == 4
    assert "skipped 4 tar member(s)" in caplog.text


@pytest.mark.parametrize("workers", [0, 1])
def test_a_shard_speaker_missing_from_train_label_is_a_clean_error(workers, tmp_path, capsys):
    from train_helpers import make_corpus, tiny_config

    raw, label = make_corpus(tmp_path / "corpus", num_spk=3, num_utt=4, seconds=0.6)
    lst = tmp_path / "shard.list"
    assert make_shard_list.main([str(raw), str(tmp_path / "shards"), str(lst)]) == 0
    lines = label.read_text().splitlines()
    label.write_text("\n".join(line for line in lines if not line.endswith("spk01")) + "\n")
    exp = tmp_path / "exp"
    rc = _train(tmp_path, tiny_config(exp, lst, label, data_type="shard", num_epochs=1,
                                      dataloader_args={"num_workers": workers}))
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err[-3000:]
    assert "speaker 'spk01' is not in the speaker table (train_label" in err
    assert "shards_000000.tar" in err


def test_a_train_label_with_one_speaker_is_a_clean_error(tmp_path, capsys):
    from train_helpers import make_corpus, tiny_config

    raw, label = make_corpus(tmp_path / "corpus", num_spk=1, num_utt=4, seconds=0.6)
    exp = tmp_path / "exp"
    assert _train(tmp_path, tiny_config(exp, raw, label, num_epochs=1)) == 2
    err = capsys.readouterr().err
    assert "1 speaker; a speaker classifier needs at least 2" in err and "Traceback" not in err
    assert not exp.exists()


def test_onnx_refuses_1khz_audio_like_the_pytorch_path(model_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from wespeaker_lap.bin import export_onnx
    from wespeaker_lap.cli.main import main as cli

    onnx = tmp_path / "x.onnx"
    assert export_onnx.main(["--model_dir", str(model_dir), "--out", str(onnx)]) == 0
    (a, _) = _wavs(tmp_path)
    low = write_audio(tmp_path / "low.wav", tone(2.0, 1000, freq=100.0), 1000)
    capsys.readouterr()
    for model in (["--model", str(model_dir)], ["--onnx", str(onnx)]):
        assert cli(["similarity", *model, str(a), str(low)]) == 2
        assert "sample rate 1000 Hz; need at least 8000 Hz" in capsys.readouterr().err


def test_extract_names_a_key_with_a_space(tmp_path, model_dir, capsys):
    d = _dir_with_a_spaced_key(tmp_path)
    assert extract.main(["--model_dir", str(model_dir), "--data", str(d), "--embed_dir",
                         str(tmp_path / "e")]) == 1
    assert "the key 'spk1 utt1' (wav.scp and utt2spk) contains a space" in \
        capsys.readouterr().err


def test_cli_with_another_models_weights_names_the_file(model_dir, tmp_path, capsys):
    from wespeaker_lap.cli.main import main as cli

    weights = model_dir / "models" / "avg_model.pt"
    _other_model_weights(weights)
    capsys.readouterr()
    (a, b) = _wavs(tmp_path)
    assert cli(["similarity", "--model", str(model_dir), str(a), str(b)]) == 2
    assert f"{weights}: these weights do not fit the model" in capsys.readouterr().err
