"""Validation during training: EER every N epochs, bad validation sets, resume, DDP shards."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from train_helpers import (
    COMMON_SCRIPT,
    make_corpus,
    make_valid_dir,
    run_torchrun,
    tiny_config,
    write_config,
)

from wespeaker_lap.bin import plot_training
from wespeaker_lap.checks import ConfigError
from wespeaker_lap.io.checkpoints import checkpoint_path, list_checkpoints, read_weights
from wespeaker_lap.io.train_log import read_train_log, truncate_train_log
from wespeaker_lap.utils.config import load_config
from wespeaker_lap.utils.trainer import train
from wespeaker_lap.utils.validation import parse_valid_args


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    return make_valid_dir(tmp_path_factory.mktemp("valid"))


def _cfg(tmp_path, corpus, valid, name="exp", **over):
    raw = tiny_config(tmp_path / name, *corpus, valid_data=str(valid[0]),
                      valid_trials=str(valid[1]), **over)
    return load_config(write_config(tmp_path / f"{name}.yaml", raw))


def _epochs(exp):
    return [r for r in read_train_log(exp / "train_log.jsonl") if r["kind"] == "epoch"]


def test_validation_logs_eer_and_leaves_training_unchanged(tmp_path, corpus, valid):
    plain = load_config(write_config(tmp_path / "p.yaml", tiny_config(tmp_path / "p", *corpus)))
    train(plain)
    train(_cfg(tmp_path, corpus, valid))
    a = read_weights(checkpoint_path(tmp_path / "p" / "models", 2))
    b = read_weights(checkpoint_path(tmp_path / "exp" / "models", 2))
    # validation neither draws from the training RNG nor leaves the model in eval mode
    assert all(torch.equal(a[k], b[k]) for k in a)
    epochs = _epochs(tmp_path / "exp")
    assert [r["epoch"] for r in epochs] == [1, 2]
    v = epochs[-1]["valid"]
    assert 0 <= v["eer"] <= 100 and v["n_target"] == 9 and v["n_nontarget"] == 27
    assert {"min_dcf_0.01", "min_dcf_0.05"} <= set(v)
    scores = epochs[-1]["layer_use"]["scores"]
    assert len(scores) == 4 and len(scores[0]) == 3  # LAP heads x layers of the tiny WavLM
    assert "valid" not in _epochs(tmp_path / "p")[0]


def test_every_n_epochs_validates_then_and_after_the_last(tmp_path, corpus, valid):
    cfg = _cfg(tmp_path, corpus, valid, num_epochs=3, valid_args={"every_n_epochs": 2})
    train(cfg)
    assert [("valid" in r) for r in _epochs(tmp_path / "exp")] == [False, True, True]


def test_unknown_trial_utterance_names_file_and_line_before_exp_dir(tmp_path, corpus, valid):
    trials = tmp_path / "trials"
    lines = valid[1].read_text().splitlines()
    trials.write_text("\n".join([lines[0], "", lines[1], "val00/utt00 nobody target"]) + "\n")
    raw = tiny_config(tmp_path / "exp", *corpus, valid_data=str(valid[0]),
                      valid_trials=str(trials))
    with pytest.raises(ConfigError, match=rf"{trials}:4: utterance 'nobody' is not in"):
        train(load_config(write_config(tmp_path / "c.yaml", raw)))
    assert not (tmp_path / "exp").exists()


def test_validation_speakers_that_train_name_them(tmp_path, corpus):
    overlap = make_valid_dir(tmp_path / "v", num_spk=2, prefix="spk")  # spk00, spk01 train
    with pytest.raises(ConfigError, match=r"2 validation speaker\(s\).*spk00, spk01"):
        train(_cfg(tmp_path, corpus, overlap))
    assert not (tmp_path / "exp").exists()


def test_empty_set_and_zero_epochs_are_clear_errors(tmp_path, corpus, valid):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "wav.scp").write_text("")
    (empty / "utt2spk").write_text("")
    with pytest.raises(ConfigError, match="validation set is empty"):
        train(_cfg(tmp_path, corpus, (empty, valid[1])))
    with pytest.raises(ConfigError, match="every_n_epochs: 0 would never validate"):
        _cfg(tmp_path, corpus, valid, valid_args={"every_n_epochs": 0})
    with pytest.raises(ConfigError, match="valid_trials is not"):
        load_config(write_config(tmp_path / "x.yaml", tiny_config(
            tmp_path / "exp", *corpus, valid_data=str(valid[0]))))
    assert not (tmp_path / "exp").exists()


def test_max_utts_keeps_trials_of_the_first_utterances():
    assert parse_valid_args({"max_utts": 4}).max_utts == 4
    with pytest.raises(ConfigError, match="valid_args.batch_size"):
        parse_valid_args({"batch_size": 0})


def test_resume_with_changed_validation_set_warns_and_notes(tmp_path, corpus, valid, caplog):
    cfg = _cfg(tmp_path, corpus, valid, num_epochs=2)
    train({**cfg, "num_epochs": 1})
    other = make_valid_dir(tmp_path / "v2", num_spk=3, num_utt=2, seed=5)
    with caplog.at_level(logging.WARNING):
        train({**cfg, "valid_data": str(other[0]), "valid_trials": str(other[1]),
               "checkpoint": "latest"})
    assert "validation set changed since epoch 1" in caplog.text
    assert "wav.scp" in caplog.text and "trials" in caplog.text
    records = read_train_log(tmp_path / "exp" / "train_log.jsonl")
    notes = [r for r in records if r["kind"] == "note"]
    assert len(notes) == 1 and "wav.scp" in notes[0]["changed"]
    # the resumed run appended epoch 2 once, after epoch 1's steps
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    steps = [r["global_step"] for r in records if r["kind"] == "step"]
    assert steps == sorted(set(steps))


def test_keep_best_bounds_the_model_files(tmp_path, corpus, valid):
    train(_cfg(tmp_path, corpus, valid, num_epochs=4, keep_best=1, num_avg=1))
    kept = [e for e, _ in list_checkpoints(tmp_path / "exp" / "models", "model")]
    eers = {r["epoch"]: r["valid"]["eer"] for r in _epochs(tmp_path / "exp")}
    best = min(sorted(eers, reverse=True), key=lambda e: eers[e])
    assert kept == sorted({best, 4})


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["one_utt", "fail"])
def test_sharded_validation_cannot_deadlock(tmp_path, corpus, valid, mode):
    config = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "exp", *corpus))
    out = run_torchrun(2, [str(COMMON_SCRIPT), "valid_shards", str(config), str(valid[0]),
                           str(valid[1]), mode], tmp_path / "logs")
    if mode == "one_utt":  # rank 1 embedded nothing; rank 0 scored
        assert "rank 1 result None" in out and "rank 0 result " in out
        assert "rank 0 result None" not in out
    else:  # rank 1 failed; both ranks raise, neither waits for the other
        assert "rank 0 raised" in out and "rank 1 raised" in out and "rank 1:" in out


def test_train_log_record_is_json_per_line(tmp_path, corpus, valid):
    train(_cfg(tmp_path, corpus, valid, num_epochs=1))
    lines = (tmp_path / "exp" / "train_log.jsonl").read_text().splitlines()
    kinds = [json.loads(line)["kind"] for line in lines]
    assert kinds.count("epoch") == 1 and kinds.count("step") == 6


def test_torn_last_line_is_skipped_and_a_resume_truncates(tmp_path):
    log = tmp_path / "train_log.jsonl"
    good = [{"kind": "epoch", "epoch": 1, "global_step": 2},
            {"kind": "step", "epoch": 2, "global_step": 3}]
    log.write_text("".join(json.dumps(r) + "\n" for r in good) + '{"kind": "st')
    assert read_train_log(log) == good
    assert truncate_train_log(log, 1) == 1
    assert read_train_log(log) == good[:1] and log.read_text().endswith("}\n")
    log.write_text('{"kind"\n' + json.dumps(good[0]) + "\n")
    with pytest.raises(ValueError, match=rf"{log}:1: not a JSON record"):
        read_train_log(log)


def test_tensorboard_events_and_plots(tmp_path, corpus, valid):
    train(_cfg(tmp_path, corpus, valid, num_epochs=2))
    exp = tmp_path / "exp"
    assert list((exp / "tensorboard").glob("events.out.tfevents.*"))
    assert plot_training.main([str(exp)]) == 0
    for name in ("training.png", "layer_use.png"):
        assert (exp / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_training.main([str(tmp_path / "nothing")]) == 1


def test_resume_with_validation_is_exact_and_appends_once(tmp_path, corpus, valid):
    cfg = _cfg(tmp_path, corpus, valid, keep_last_states=2)
    train(cfg)
    full = tmp_path / "exp"
    cut = tmp_path / "cut"
    (cut / "models").mkdir(parents=True)
    shutil.copy(checkpoint_path(full / "models", 1, "state"), cut / "models")
    # the killed run had logged part of epoch 2 (and a torn line) before it died
    lines = (full / "train_log.jsonl").read_text().splitlines(keepends=True)
    (cut / "train_log.jsonl").write_text("".join(lines[:9]) + lines[9][:20])
    train({**cfg, "exp_dir": str(cut), "checkpoint": "latest"})
    a = read_weights(checkpoint_path(full / "models", 2))
    b = read_weights(checkpoint_path(cut / "models", 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = read_train_log(full / "train_log.jsonl"), read_train_log(cut / "train_log.jsonl")
    assert [(r["kind"], r.get("global_step")) for r in ra] == \
        [(r["kind"], r.get("global_step")) for r in rb]
    assert ra[-1]["valid"]["eer"] == rb[-1]["valid"]["eer"]
