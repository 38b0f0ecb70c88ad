"""Training config: WeSpeaker grammar, overrides, schema errors, save/load round trip."""

from __future__ import annotations

import pytest
import yaml
from train_helpers import make_corpus, tiny_config, write_config

from wespeaker_lap.bin import train as train_bin
from wespeaker_lap.checks import ConfigError
from wespeaker_lap.utils.config import (
    SCHEMA,
    SPECS,
    load_config,
    merge_overrides,
    parse_overrides,
    save_config,
    validate_config,
    with_defaults,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), num_spk=2, num_utt=2)


@pytest.fixture
def cfg_file(tmp_path, corpus):
    return write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "exp", *corpus))


def test_overrides_parse_values_as_yaml_scalars():
    got = parse_overrides(["--num_epochs", "3", "--a.b=1e-3", "--c", "null", "--d", "[1, 2]",
                           "--e", "true", "--f", "exp/x"])
    assert got == [("num_epochs", 3), ("a.b", 1e-3), ("c", None), ("d", [1, 2]), ("e", True),
                   ("f", "exp/x")]


@pytest.mark.parametrize("argv", [["num_epochs", "3"], ["--num_epochs"], ["--", "3"]])
def test_overrides_reject_malformed_tokens(argv):
    with pytest.raises(ConfigError):
        parse_overrides(argv)


def test_overrides_set_section_entries_and_merge_mappings():
    cfg = merge_overrides({"model_args": {"heads": 16, "lap_dim": 512}},
                          ["--model_args.heads", "8", "--dataset_args", "{aug_prob: 0.5}",
                           "--frontend_args.config.hidden_size", "64"])
    assert cfg["model_args"] == {"heads": 8, "lap_dim": 512}
    assert cfg["dataset_args"] == {"aug_prob": 0.5}
    assert cfg["frontend_args"] == {"config": {"hidden_size": 64}}


def test_load_applies_overrides_and_defaults(cfg_file):
    cfg = load_config(cfg_file, ["--model_args.heads", "8", "--num_epochs=5"])
    assert cfg["model_args"]["heads"] == 8 and cfg["num_epochs"] == 5
    assert cfg["accum_grad"] == 1 and cfg["keep_last_states"] == 1 and cfg["loss_args"] == {}


def test_unknown_top_level_key_in_file_names_it_and_the_closest(tmp_path, cfg_file):
    raw = yaml.safe_load(cfg_file.read_text())
    raw["num_epoch"] = 3
    bad = write_config(tmp_path / "bad.yaml", raw)
    with pytest.raises(ConfigError, match=r"'num_epoch'.*did you mean 'num_epochs'"):
        load_config(bad)


def test_unknown_override_names_it(cfg_file):
    with pytest.raises(ConfigError, match=r"--num_epoch\b.*did you mean '--num_epochs'"):
        load_config(cfg_file, ["--num_epoch", "3"])


def test_model_args_are_checked_against_the_registered_constructor(cfg_file):
    with pytest.raises(ConfigError, match=r"'model_args.head'.*did you mean 'heads'"):
        load_config(cfg_file, ["--model_args.head", "8"])
    # overriding the model re-checks its arguments: LAP_ASTP's lap_dim is not MHFA's
    with pytest.raises(ConfigError, match=r"'model_args.lap_dim'.*model_args.head_nb"):
        load_config(cfg_file, ["--model", "MHFA"])


def test_floats_written_without_a_dot_are_floats(tmp_path, cfg_file):
    text = cfg_file.read_text().replace("initial_lr: 0.01", "initial_lr: 1e-2")
    assert "initial_lr: 1e-2" in text
    cfg = load_config(write_config_text(tmp_path / "f.yaml", text), ["--scheduler_args.final_lr",
                                                                     "2E-3"])
    assert cfg["scheduler_args"]["initial_lr"] == 0.01 and cfg["scheduler_args"]["final_lr"] == 2e-3


def write_config_text(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("override, pattern", [
    (["--frontend_args.froze", "false"], r"frontend_args.froze.*'frozen'"),
    (["--optimizer_args.weight_decai", "0"], r"optimizer_args.weight_decai.*'weight_decay'"),
    (["--scheduler_args.warmup_epoch", "1"], r"scheduler_args.warmup_epoch.*'warm_up_epoch'"),
    (["--projection_args.scal", "30"], r"projection_args.scal.*'scale'"),
    (["--margin_update.final_margn", "0.3"], r"margin_update.final_margn"),
    (["--dataloader_args.batchsize", "8"], r"dataloader_args.batchsize.*'batch_size'"),
    (["--finetune_args.layer_decai", "0.9"], r"finetune_args.layer_decai.*'layer_decay'"),
    (["--dataset_args.speed_pertub", "true"], r"dataset_args.speed_pertub"),
    (["--dataset_args.aug_args", "{snr_db: 1}"], r"aug_args.*snr_db"),
    (["--optimizer", "Adamm"], r"optimizer.*'Adamm'.*did you mean 'Adam'"),
    (["--model", "LAP"], r"model.*'LAP'.*valid"),
    (["--projection_args.project_type", "arcface"], r"project_type.*'arcface'"),
])
def test_every_section_rejects_unknown_keys(cfg_file, override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(cfg_file, override)


def test_keys_train_fills_in_are_errors_that_say_so(cfg_file):
    with pytest.raises(ConfigError, match="filled in by train.py"):
        load_config(cfg_file, ["--projection_args.num_class", "10"])
    with pytest.raises(ConfigError, match="filled in by train.py"):
        load_config(cfg_file, ["--optimizer_args.lr", "0.1"])


def test_required_keys_and_section_types(cfg_file):
    raw = yaml.safe_load(cfg_file.read_text())
    del raw["model"]
    with pytest.raises(ConfigError, match="missing required"):
        validate_config(with_defaults(raw))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(cfg_file, ["--model_args", "3"])
    with pytest.raises(ConfigError, match="not a section"):
        load_config(cfg_file, ["--num_epochs.x", "3"])


def test_saved_config_loads_back_identically_and_records_the_run(tmp_path, cfg_file):
    cfg = load_config(cfg_file, ["--model_args.heads", "8"])
    out = save_config(cfg, tmp_path / "exp" / "config.yaml", argv=["--config", str(cfg_file)],
                      extra_header="# derived: x=1\n")
    text = out.read_text()
    assert text.startswith("# wespeaker_lap ") and "torch" in text.splitlines()[0]
    assert f"--config {cfg_file}" in text.splitlines()[1]
    assert "# derived: x=1" in text
    assert load_config(out) == cfg


def test_schema_is_one_table_of_documented_keys():
    assert len(SPECS) == len(SCHEMA) and all(s.doc and "\n" not in s.doc for s in SCHEMA)
    for spec in SCHEMA:
        if spec.section:  # a section's keys come from one place: a key set or a class
            assert (spec.keys is None) != (spec.class_key is None), spec.name
        else:
            assert not (spec.required and spec.default is not None), spec.name
    cfg = with_defaults({})
    assert {s.name for s in SCHEMA if not s.required or s.section} <= set(cfg)
    assert cfg["optimizer"] == SPECS["optimizer"].default and cfg["lora_args"] == {}


def test_print_config_prints_the_merged_config_with_a_comment_per_key(tmp_path, cfg_file,
                                                                      capsys):
    overrides = ["--model_args.heads", "8", "--num_epochs=5"]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert train_bin.main(["--config", str(cfg_file), "--print_config", *overrides]) == 0
    out = capsys.readouterr().out
    printed = yaml.safe_load(out)
    assert printed == load_config(cfg_file, overrides)
    assert printed["model_args"]["heads"] == 8 and printed["num_epochs"] == 5
    assert set(printed) == set(SPECS)  # every default filled
    lines = out.splitlines()
    for spec in SCHEMA:
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{spec.name}:"))
        assert lines[at - 1] == f"# {spec.doc}", spec.name
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    assert not (tmp_path / "exp").exists()


def test_print_config_refuses_a_bad_config_like_training(cfg_file, capsys):
    assert train_bin.main(["--config", str(cfg_file), "--print_config", "--num_epoch", "3"]) == 2
    assert "did you mean '--num_epochs'" in capsys.readouterr().err
