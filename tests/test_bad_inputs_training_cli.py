"""Bad inputs and faults of training, checkpoints, scoring inputs and the CLI (issue 13).

Each case is what a user meets: a bad option value, a model directory whose SSL
model moved or changed, a truncated checkpoint, a full disk, a byte-order mark,
a wrong config type. Each must end in a clear error naming what and where (or
a warning and the right result), before any work is done or anything written.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from train_helpers import make_corpus, tiny_config, write_config

from wespeaker_lap.bin import compute_metrics as compute_metrics_bin
from wespeaker_lap.bin import extract as extract_bin
from wespeaker_lap.bin import score as score_bin
from wespeaker_lap.bin import train as train_bin
from wespeaker_lap.cli import main as cli
from wespeaker_lap.frontend import SSLFrontend
from wespeaker_lap.frontend.fingerprint import (
    FINGERPRINT_FILE,
    FrontendMismatchError,
    frontend_fingerprint,
    write_fingerprint,
)
from wespeaker_lap.frontend.testing import tiny_ssl_config
from wespeaker_lap.io.checkpoints import (
    STATE_FORMAT,
    CheckpointError,
    checkpoint_path,
    read_weights,
    save_weights,
)
from wespeaker_lap.io.files import read_scp
from wespeaker_lap.io.xvectors import EmbeddingTable, write_xvectors
from wespeaker_lap.models import build_extractor
from wespeaker_lap.models.inference import load_trained_extractor, resolve_model_dir
from wespeaker_lap.scoring.score import read_scores, read_trials, score_output_paths
from wespeaker_lap.utils.config import load_config
from wespeaker_lap.utils.distributed import DistInfo
from wespeaker_lap.utils.extraction import ExtractOptions, extract_embeddings
from wespeaker_lap.utils.logging_utils import LogProgress
from wespeaker_lap.utils.trainer import train
from wespeaker_lap.utils.training_state import load_training_state, resolve_resume

SR = 16000


# ------------------------------------------------------------------ fixtures
def _backend_config(frontend_args: dict) -> dict:
    return {"exp_dir": "unused", "frontend": "ssl", "frontend_args": frontend_args,
            "model": "LAP_ASTP", "model_args": {"embed_dim": 16, "lap_dim": 32, "heads": 4}}


def _make_exp(exp, frontend_args: dict, config_frontend_args: dict | None = None,
              fingerprint: bool = True):
    """An exp_dir as training leaves it: config.yaml, models/avg_model.pt, frontend.json."""
    cfg = _backend_config(frontend_args)
    (exp / "models").mkdir(parents=True)
    torch.manual_seed(1)
    ext = build_extractor(cfg)
    save_weights(ext, exp / "models" / "avg_model.pt")
    if fingerprint:
        write_fingerprint(exp, frontend_fingerprint(frontend_args))
    saved = _backend_config(config_frontend_args or frontend_args)
    (exp / "config.yaml").write_text(yaml.safe_dump(saved))
    return exp


def _save_ssl(path, seed: int):
    fe = SSLFrontend(config=tiny_ssl_config("wavlm"), init_seed=seed)
    fe.save_pretrained(path)
    return path


@pytest.fixture
def model_dir(tmp_path):
    """A model directory on a random tiny SSL model (no SSL files to move)."""
    return _make_exp(tmp_path / "exp", {"config": tiny_ssl_config("wavlm")}, fingerprint=False)


@pytest.fixture
def wavs(tmp_path):
    rng = np.random.default_rng(0)
    out = []
    for i in range(2):
        t = np.arange(SR) / SR
        x = 0.3 * np.sin(2 * np.pi * (150 + 70 * i) * t) + 0.05 * rng.standard_normal(SR)
        p = tmp_path / f"w{i}.wav"
        sf.write(p, x.astype(np.float32), SR)
        out.append(str(p))
    return out


# ----------------------------------------------------------- item 1: CLI options
CLI_CASES = {
    "batch_size -1": (["embed", "{a}", "{b}", "--batch_size", "-1", "--out", "{out}.npy"],
                      "--batch_size"),
    "batch_size 0": (["embed", "{a}", "{b}", "--batch_size", "0", "--out", "{out}.npy"],
                     "--batch_size"),
    "device foo": (["similarity", "{a}", "{b}", "--device", "foo"], "--device"),
    "threshold nan": (["verify", "{a}", "{b}", "--threshold", "nan"], "--threshold"),
    "threshold inf": (["verify", "{a}", "{b}", "--threshold", "inf"], "--threshold"),
    "same file twice into an ark": (["embed", "{a}", "{a}", "--out", "{out}.ark"],
                                    "given twice"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_refuses_bad_option_values_naming_the_option(case, tmp_path, model_dir, wavs,
                                                         capsys):
    argv, needle = CLI_CASES[case]
    out = tmp_path / "out"
    argv = [a.format(a=wavs[0], b=wavs[1], out=out) for a in argv]
    rc = cli.main([argv[0], "--model_dir", str(model_dir), *argv[1:]])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert needle in err and "Traceback" not in err
    assert not list(tmp_path.glob("out*")), "nothing is written on a refused option"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_device_cuda_without_cuda_is_a_clear_error(model_dir, wavs, capsys):
    rc = cli.main(["similarity", "--model_dir", str(model_dir), *wavs, "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc == 2 and "--device" in err and "CUDA is not available" in err


@pytest.mark.parametrize("shape", [(4, 4), (1, 16), ()])
def test_cli_refuses_a_mean_vector_that_is_not_1d(shape, tmp_path, model_dir, wavs, capsys):
    mean = tmp_path / "mean.npy"
    np.save(mean, np.zeros(shape, np.float32))
    rc = cli.main(["similarity", "--model_dir", str(model_dir), *wavs, "--mean_vec", str(mean)])
    err = capsys.readouterr().err
    assert rc == 2 and "1-D" in err and str(mean) in err


def test_cli_embed_ark_keeps_distinct_files_with_one_stem_apart(tmp_path, model_dir, wavs):
    other = tmp_path / "sub"
    other.mkdir()
    shutil.copy(wavs[0], other / "w0.wav")
    out = tmp_path / "x.ark"
    assert cli.main(["embed", "--model_dir", str(model_dir), wavs[0], str(other / "w0.wav"),
                     "--out", str(out)]) == 0
    assert len(read_scp(tmp_path / "x.scp")) == 2


@pytest.mark.parametrize("option,value", [("--c_miss", "-1"), ("--c_fa", "0"),
                                          ("--c_miss", "nan"), ("--p_target", "1.5")])
def test_compute_metrics_refuses_bad_costs_and_priors(option, value, tmp_path, capsys):
    scores = tmp_path / "s.score"
    scores.write_text("a b 0.9 target\na c 0.1 nontarget\n")
    rc = compute_metrics_bin.main([str(scores), option, value])
    err = capsys.readouterr().err
    assert rc == 2 and option in err


# --------------------------------------------------- item 2: the frozen model's identity
@pytest.fixture
def ssl_exp(tmp_path):
    """recipe/exp/ssl (a saved tiny SSL model) and recipe/exp/lap with config './exp/ssl'."""
    recipe = tmp_path / "recipe"
    ssl = _save_ssl(recipe / "exp" / "ssl", seed=0)
    exp = _make_exp(recipe / "exp" / "lap", {"model_name_or_path": str(ssl)},
                    config_frontend_args={"model_name_or_path": "./exp/ssl"})
    return recipe, ssl, exp


def test_relative_ssl_path_is_not_resolved_against_the_current_directory(
        ssl_exp, tmp_path, monkeypatch):
    """From a directory holding another exp/ssl of the same shape: refused, not a wrong model."""
    _, _, exp = ssl_exp
    elsewhere = tmp_path / "elsewhere"
    _save_ssl(elsewhere / "exp" / "ssl", seed=5)  # same shape, other weights
    monkeypatch.chdir(elsewhere)
    with pytest.raises(FileNotFoundError, match="resolved against the experiment directory"):
        load_trained_extractor(*resolve_model_dir(exp))


def test_relative_ssl_path_resolves_against_the_experiment_directory(tmp_path, monkeypatch):
    ssl = _save_ssl(tmp_path / "exp" / "ssl", seed=0)
    exp = _make_exp(tmp_path / "exp" / "lap", {"model_name_or_path": str(ssl)},
                    config_frontend_args={"model_name_or_path": "../ssl"})
    monkeypatch.chdir(tmp_path.parent)
    ext = load_trained_extractor(*resolve_model_dir(exp))
    ref = SSLFrontend(model_name_or_path=ssl)
    sd = ext.frontend.model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in ref.model.state_dict().items())


def _overwrite_ssl(ssl):
    shutil.rmtree(ssl)
    _save_ssl(ssl, seed=3)  # "re-running pre-training"


def test_an_overwritten_ssl_model_fails_naming_both_fingerprints(ssl_exp, monkeypatch):
    recipe, ssl, exp = ssl_exp
    monkeypatch.chdir(recipe)
    cfg = yaml.safe_load((exp / "config.yaml").read_text())
    cfg["frontend_args"]["model_name_or_path"] = str(ssl)  # absolute, as training writes it
    (exp / "config.yaml").write_text(yaml.safe_dump(cfg))
    load_trained_extractor(*resolve_model_dir(exp))  # the recorded model: fine
    recorded = json.loads((exp / FINGERPRINT_FILE).read_text())
    _overwrite_ssl(ssl)
    with pytest.raises(FrontendMismatchError) as e:
        load_trained_extractor(*resolve_model_dir(exp))
    msg = str(e.value)
    assert "weights" in msg and recorded["weights_sha256"][:16] in msg
    assert str(exp / FINGERPRINT_FILE) in msg and str(ssl) in msg
    current = frontend_fingerprint({"model_name_or_path": str(ssl)})
    assert current["weights_sha256"][:16] in msg
    # the explicit override uses it, with a warning
    load_trained_extractor(*resolve_model_dir(exp), ignore_frontend_mismatch=True)


def test_an_unchanged_ssl_model_is_not_hashed_again(ssl_exp, monkeypatch):
    _, ssl, exp = ssl_exp
    cfg = yaml.safe_load((exp / "config.yaml").read_text())
    cfg["frontend_args"]["model_name_or_path"] = str(ssl)
    (exp / "config.yaml").write_text(yaml.safe_dump(cfg))

    def no_read(path):
        raise AssertionError(f"{path} was hashed again")

    monkeypatch.setattr("wespeaker_lap.frontend.fingerprint._sha256_file", no_read)
    load_trained_extractor(*resolve_model_dir(exp))  # size and mtime as recorded


def test_cli_and_extract_refuse_a_changed_ssl_model_unless_told(ssl_exp, wavs, tmp_path,
                                                                capsys):
    recipe, ssl, exp = ssl_exp
    cfg = yaml.safe_load((exp / "config.yaml").read_text())
    cfg["frontend_args"]["model_name_or_path"] = str(ssl)
    (exp / "config.yaml").write_text(yaml.safe_dump(cfg))
    _overwrite_ssl(ssl)
    assert cli.main(["similarity", "--model_dir", str(exp), *wavs]) == 2
    assert FINGERPRINT_FILE in capsys.readouterr().err
    assert cli.main(["similarity", "--model_dir", str(exp), *wavs,
                     "--ignore_frontend_mismatch"]) == 0
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"u0 {wavs[0]}\nu1 {wavs[1]}\n")
    (data / "utt2spk").write_text("u0 s0\nu1 s1\n")
    argv = ["--model_dir", str(exp), "--data", str(data), "--embed_dir", str(tmp_path / "e"),
            "--no_progress", "--device", "cpu"]
    assert extract_bin.main(argv) == 1
    assert not (tmp_path / "e" / "xvector.scp").exists()
    assert extract_bin.main([*argv, "--ignore_frontend_mismatch"]) == 0


@pytest.fixture
def corpus(tmp_path):
    return make_corpus(tmp_path / "corpus", num_spk=2, num_utt=4, seconds=0.6)


def test_training_records_an_absolute_ssl_path_and_its_fingerprint(tmp_path, corpus,
                                                                   monkeypatch):
    raw, label = corpus
    _save_ssl(tmp_path / "work" / "exp" / "ssl", seed=0)
    monkeypatch.chdir(tmp_path / "work")
    exp = tmp_path / "work" / "exp" / "lap"
    cfg = tiny_config(exp, raw, label, num_epochs=1,
                      frontend_args={"model_name_or_path": "./exp/ssl", "frozen": True,
                                     "config": None})
    cfg["frontend_args"].pop("config")
    train(load_config(write_config(tmp_path / "c.yaml", cfg)))
    saved = yaml.safe_load((exp / "config.yaml").read_text())
    ssl = tmp_path / "work" / "exp" / "ssl"
    assert saved["frontend_args"]["model_name_or_path"] == str(ssl.resolve())
    fp = json.loads((exp / FINGERPRINT_FILE).read_text())
    assert fp == frontend_fingerprint({"model_name_or_path": str(ssl)})
    # a resume on another SSL model is refused before any epoch runs
    _overwrite_ssl(ssl)
    cfg2 = load_config(exp / "config.yaml", ["--checkpoint", "latest", "--num_epochs", "2"])
    with pytest.raises(ValueError, match="cannot resume"):
        train(cfg2)
    assert not checkpoint_path(exp / "models", 2, "state").exists()


# ----------------------------------------------- item 3: two trial files, one name
def test_two_trial_files_with_one_base_name_are_refused(tmp_path, capsys):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "trials").write_text("u1 u2 target\n")
    with pytest.raises(ValueError, match="same base name"):
        score_output_paths([tmp_path / "a" / "trials", tmp_path / "b" / "trials"], tmp_path)
    _, scp = write_xvectors(tmp_path / "emb", {"u1": np.ones(4), "u2": np.ones(4)})
    rc = score_bin.main(["--embeddings", str(scp), "--trials", str(tmp_path / "a" / "trials"),
                         str(tmp_path / "b" / "trials"), "--output_dir", str(tmp_path / "out")])
    assert rc == 1 and "same base name" in capsys.readouterr().err
    assert not (tmp_path / "out" / "trials.score").exists()


# ------------------------------------------------------- item 5: checkpoint faults
def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: keep if keep >= 0 else len(data) + keep])


@pytest.mark.parametrize("keep", [0, 10, 1000, -10])
def test_truncated_weights_name_the_file_and_the_fault(keep, tmp_path):
    path = checkpoint_path(tmp_path, 3)
    save_weights({"w": torch.randn(64, 64)}, path)
    _truncate(path, keep)
    with pytest.raises(CheckpointError) as e:
        read_weights(path)
    assert str(path) in str(e.value) and "cut short" in str(e.value)


@pytest.mark.parametrize("keep", [0, 1000])
def test_truncated_training_state_names_the_file(keep, tmp_path):
    path = checkpoint_path(tmp_path, 2, "state")
    torch.save({"format": STATE_FORMAT, "epoch": 2, "model": {"w": torch.randn(64, 64)},
                "optimizer": {}, "rng": []}, path)
    _truncate(path, keep)
    with pytest.raises(CheckpointError, match=str(path)):
        load_training_state(path)


def test_cli_names_a_truncated_avg_model(model_dir, wavs, capsys):
    _truncate(model_dir / "models" / "avg_model.pt", 100)
    assert cli.main(["similarity", "--model_dir", str(model_dir), *wavs]) == 2
    err = capsys.readouterr().err
    assert "avg_model.pt" in err and "cut short" in err


def test_checkpoint_latest_falls_back_to_the_newest_intact_state(tmp_path, caplog):
    m = tmp_path / "models"
    m.mkdir()
    for e in (1, 2, 3):
        torch.save({"format": STATE_FORMAT, "epoch": e, "model": {}, "optimizer": {},
                    "rng": []}, checkpoint_path(m, e, "state"))
    _truncate(checkpoint_path(m, 3, "state"), 50)
    with caplog.at_level(logging.WARNING):
        assert resolve_resume("latest", m)[:2] == (2, checkpoint_path(m, 2, "state"))
    assert "state_3.pt" in caplog.text
    for e in (1, 2):
        _truncate(checkpoint_path(m, e, "state"), 0)
    with pytest.raises(CheckpointError, match="no intact state"):
        resolve_resume("latest", m)


@pytest.mark.parametrize("fault", ["ENOSPC", "zip writer"])
def test_a_full_disk_during_a_save_says_so_and_names_the_file(fault, tmp_path, monkeypatch):
    path = checkpoint_path(tmp_path, 1)
    save_weights({"w": torch.zeros(2)}, path)

    def full(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        if fault == "ENOSPC":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 98816 "
                           "vs 98704")

    monkeypatch.setattr(torch, "save", full)
    if fault == "zip writer":  # torch's own report of a full disk
        monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 0))
    with pytest.raises(OSError) as e:
        save_weights({"w": torch.ones(2)}, path)
    assert e.value.errno == errno.ENOSPC
    assert "no space left on device" in str(e.value) and str(path) in str(e.value)
    monkeypatch.undo()
    assert torch.equal(read_weights(path)["w"], torch.zeros(2)), "the old file is kept"
    assert not list(tmp_path.glob(".*.tmp"))


def test_resume_removes_tmp_files_of_a_killed_save_and_trains_on(tmp_path, corpus):
    raw, label = corpus
    exp = tmp_path / "exp"
    train(load_config(write_config(tmp_path / "c.yaml", tiny_config(exp, raw, label,
                                                                   num_epochs=1))))
    models = exp / "models"
    junk = [models / ".state_2.pt.k1ll3d.tmp", models / ".model_2.pt.a8c9x.tmp",
            exp / ".config.yaml.x1y2.tmp"]
    for j in junk:
        j.write_bytes(b"half a checkpoint")
    train(load_config(exp / "config.yaml", ["--checkpoint", "latest", "--num_epochs", "2"]))
    assert not any(j.exists() for j in junk)
    assert checkpoint_path(models, 2, "state").is_file()


# ------------------------------------------------------------- item 7: byte-order mark
BOM = "\ufeff"


def test_a_bom_in_a_kaldi_table_is_stripped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "utt2spk"
    path.write_text(BOM + "u1 s1\nu2 s2\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        table = read_scp(path)
    assert list(table) == ["u1", "u2"]
    assert str(path) in caplog.text and "byte-order mark" in caplog.text


@pytest.mark.parametrize("kind", ["trials", "scores"])
def test_a_bom_in_trials_or_scores_is_stripped_with_a_warning(kind, tmp_path, caplog):
    path = tmp_path / kind
    body = "u1 u2 target\nu1 u3 nontarget\n" if kind == "trials" else \
        "u1 u2 0.5 target\nu1 u3 0.1 nontarget\n"
    path.write_text(BOM + body, encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        trials = read_trials(path) if kind == "trials" else read_scores(path)[0]
    assert trials.enroll[0] == "u1"
    assert str(path) in caplog.text


# ------------------------------------------------------------------- item 6: config
def _bad(cfg, key, value):
    if "." in key:
        section, sub = key.split(".")
        cfg[section][sub] = value
    elif value is _MISSING:
        cfg.pop(key)
    else:
        cfg[key] = value


_MISSING = object()
CONFIG_CASES = {
    "num_epochs two": ("num_epochs", "two", "num_epochs"),
    "num_epochs 0": ("num_epochs", 0, "num_epochs"),
    "num_epochs -2": ("num_epochs", -2, "num_epochs"),
    "heads '4'": ("model_args.heads", "4", "model_args.heads"),
    "batch_size 0": ("dataloader_args.batch_size", 0, "batch_size"),
    "batch_size 1": ("dataloader_args.batch_size", 1, "BatchNorm"),
    "negative lr": ("scheduler_args.initial_lr", -0.01, "scheduler_args.initial_lr"),
    "no frontend_args": ("frontend_args", _MISSING, "frontend_args"),
    "no scheduler_args": ("scheduler_args", _MISSING, "scheduler_args"),
    "no model_args": ("model_args", _MISSING, "model_args"),
    "train_data missing": ("train_data", "/nonexistent/raw.list", "train_data"),
    "seed 1.5": ("seed", 1.5, "seed"),
    "enable_amp 'yes'": ("enable_amp", "yes", "expected true, false or auto"),
    "amp_dtype bf32": ("amp_dtype", "bf32", "'bfloat16'"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_a_bad_config_is_refused_naming_the_key_before_exp_dir_exists(case, tmp_path, corpus,
                                                                      capsys):
    key, value, needle = CONFIG_CASES[case]
    raw, label = corpus
    exp = tmp_path / "exp"
    cfg = tiny_config(exp, raw, label, num_epochs=1)
    _bad(cfg, key, value)
    rc = train_bin.main(["--config", str(write_config(tmp_path / "c.yaml", cfg)),
                         "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert needle in err and "Traceback" not in err
    assert not exp.exists(), "nothing is written before the config is known to be good"


@pytest.mark.parametrize("override,needle", [("--num_epochs=1.5", "num_epochs"),
                                             ("--model_args.heads=four", "model_args.heads")])
def test_a_bad_override_is_refused_not_coerced(override, needle, tmp_path, corpus, capsys):
    raw, label = corpus
    exp = tmp_path / "exp"
    config = write_config(tmp_path / "c.yaml", tiny_config(exp, raw, label))
    assert train_bin.main(["--config", str(config), "--device", "cpu", override]) == 2
    assert needle in capsys.readouterr().err and not exp.exists()


# ------------------------------------------------ item 6: unreadable scoring inputs
def test_a_npy_given_as_embeddings_names_the_file(tmp_path, capsys):
    npy = tmp_path / "emb.npy"
    np.save(npy, np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match=str(npy)):
        EmbeddingTable.from_scp(npy)
    (tmp_path / "trials").write_text("a b target\n")
    rc = score_bin.main(["--embeddings", str(npy), "--trials", str(tmp_path / "trials"),
                         "--output_dir", str(tmp_path / "out")])
    assert rc == 1 and str(npy) in capsys.readouterr().err


@pytest.mark.parametrize("keep", [-7, 20])
def test_a_truncated_ark_names_the_scp(keep, tmp_path):
    ark, scp = write_xvectors(tmp_path, {f"u{i}": np.ones(8) * i for i in range(3)})
    _truncate(ark, keep)
    with pytest.raises(ValueError) as e:
        EmbeddingTable.from_scp(scp)
    assert str(scp) in str(e.value) and "truncated" in str(e.value)


# ---------------------------------------------------- item 6: progress bars in log files
def test_extraction_logs_lines_not_carriage_returns_when_stderr_is_a_file(
        tmp_path, model_dir, wavs, capsys, monkeypatch):
    monkeypatch.setattr("wespeaker_lap.utils.extraction.PROGRESS_EVERY", 1)
    entries = [{"key": f"u{i}", "spk": "s", "wav": w} for i, w in enumerate(wavs)]
    n = extract_embeddings(*resolve_model_dir(model_dir), entries, "raw", tmp_path / "e",
                           DistInfo(), ExtractOptions(progress=True))
    assert n == 2
    assert "\r" not in capsys.readouterr().err


def test_log_progress_logs_one_line_every_n(caplog):
    bar = LogProgress("extract test", every=10, total=35, unit="utt")
    with caplog.at_level(logging.INFO, logger="wespeaker_lap.progress"):
        for _ in range(35):
            bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and lines[0].startswith("extract test: 10/35 utt")


def test_training_progress_writes_no_carriage_returns_to_a_log(tmp_path, corpus, capfd):
    raw, label = corpus
    cfg = tiny_config(tmp_path / "exp", raw, label, num_epochs=1)
    assert train_bin.main(["--config", str(write_config(tmp_path / "c.yaml", cfg)),
                           "--device", "cpu"]) == 0
    err = capfd.readouterr().err
    assert "epoch 1" in err and "\r" not in err


def test_a_latin1_table_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "wav.scp"
    path.write_bytes("u1 a.wav\nu2 caf\xe9.wav\n".encode("latin-1"))
    with pytest.raises(ValueError, match=f"{path}:2: not UTF-8"):
        read_scp(path)
