"""Which SSL model a name means: one rule (``is_local_path``) for loading and for experiments."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wespeaker_lap.frontend import is_local_path, load_ssl_model
from wespeaker_lap.frontend.fingerprint import absolute_frontend_args, resolve_frontend_args
from wespeaker_lap.frontend.testing import tiny_ssl_config

#: (name, local?) for names that do not exist on disk, one of every shape.
SHAPES = [
    ("/models/wavlm", True),                     # absolute
    ("./wavlm", True),                           # relative, explicit
    ("../wavlm", True),
    ("exp/ssl/model", True),                     # more than one '/': never a hub id
    ("~", True),
    ("~/models/wavlm", True),
    ("wavlm-base", False),                       # bare name: a hub-style name
    ("wavlm_base.v2", False),
    ("microsoft/wavlm-base-plus", False),        # org/name: a hub id
    ("C:\\models\\wavlm", True),                 # Windows paths
    ("C:/models/wavlm", True),
    (".\\wavlm", True),
    ("\\\\server\\share\\wavlm", True),
    ("models\\wavlm", True),
    (".hidden", True),                           # hub names never start with '.' or '-'
    ("-wavlm", True),
    ("org/.", True),
    ("my model", True),                          # a space: not a hub id
    ("", True),
]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty directory, so that what exists on disk is what the test makes."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name,local", SHAPES, ids=[repr(n) for n, _ in SHAPES])
def test_is_local_path_by_shape_of_a_name_that_does_not_exist(in_tmp, name, local):
    assert is_local_path(name) is local


@pytest.mark.parametrize("name", ["org/name", "wavlm-base"])
def test_a_hub_style_name_that_exists_as_a_directory_is_local(in_tmp, name):
    assert not is_local_path(name)
    (in_tmp / name).mkdir(parents=True)
    assert is_local_path(name)


def test_a_path_object_is_always_local(in_tmp):
    assert not is_local_path("wavlm-base")
    assert is_local_path(Path("wavlm-base"))
    assert is_local_path(Path("./org/name"))  # Path drops the './': still a path


def _load_verdict(name) -> bool:
    """True when load_ssl_model takes ``name`` (which does not exist) as a local directory."""
    with pytest.raises(OSError) as err:
        load_ssl_model(name)
    if isinstance(err.value, FileNotFoundError):  # no such directory, or no config.json in it
        assert "SSL checkpoint directory" in str(err.value), err.value
        return True
    assert "hub lookup failed" in str(err.value), err.value  # HF_HUB_OFFLINE (conftest)
    return False


def _resolve_verdict(name, exp_dir: Path) -> bool:
    """True when resolve_frontend_args takes ``name`` as a local path: it is made absolute,
    or refused as a relative path missing under ``exp_dir``; False when kept as a hub id."""
    try:
        out = resolve_frontend_args({"model_name_or_path": name}, exp_dir)["model_name_or_path"]
    except FileNotFoundError:
        return True
    if Path(out).is_absolute():
        return True
    assert out == name
    return False


@pytest.mark.parametrize("name,local", [s for s in SHAPES if s[0]],
                         ids=[repr(n) for n, _ in SHAPES if n])
def test_loading_and_resolving_an_experiment_agree_on_every_shape(in_tmp, name, local):
    exp_dir = in_tmp / "exp"
    exp_dir.mkdir()
    assert _load_verdict(name) is local
    assert _resolve_verdict(name, exp_dir) is local


def test_a_bare_name_is_a_hub_id_at_training_and_at_load_time(in_tmp):
    """The case that used to disagree: training loaded 'wavlm-base' from the hub, and the
    experiment could then not be loaded (a relative path missing under exp_dir)."""
    exp_dir = in_tmp / "exp"
    exp_dir.mkdir()
    recorded = absolute_frontend_args({"model_name_or_path": "wavlm-base"})  # training side
    assert recorded == {"model_name_or_path": "wavlm-base"}
    assert not _load_verdict("wavlm-base")
    assert resolve_frontend_args(recorded, exp_dir) == recorded  # load side: still a hub id


def test_a_bare_name_that_is_a_directory_is_the_same_model_at_training_and_load_time(in_tmp):
    model, _ = load_ssl_model(config=tiny_ssl_config("hubert"))
    model.save_pretrained(in_tmp / "wavlm-base")
    trained, _ = load_ssl_model("wavlm-base")  # training: the directory, not the hub
    recorded = absolute_frontend_args({"model_name_or_path": "wavlm-base"})
    assert recorded["model_name_or_path"] == str(in_tmp / "wavlm-base")
    exp_dir = in_tmp / "exp"
    exp_dir.mkdir()
    resolved = resolve_frontend_args(recorded, exp_dir)
    assert resolved == recorded
    loaded, _ = load_ssl_model(resolved["model_name_or_path"])
    a, b = trained.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # written by hand as the bare relative name, it is a path: resolved against exp_dir
    # only, and refused (naming the current directory's copy) when exp_dir lacks it
    with pytest.raises(FileNotFoundError, match="exists relative to the current directory"):
        resolve_frontend_args({"model_name_or_path": "wavlm-base"}, exp_dir)


@pytest.mark.parametrize("name,local", SHAPES, ids=[repr(n) for n, _ in SHAPES])
def test_model_sources_follow_the_same_rule_with_an_optional_revision(in_tmp, name, local):
    """``load_model``'s sources (``org/name[@revision]``) decide by the SSL models' rule."""
    from wespeaker_lap.io.sources import split_hub_id

    assert (split_hub_id(name) is None) is local
    if not local:
        assert split_hub_id(name) == (name, None)
        assert split_hub_id(f"{name}@v1.0") == (name, "v1.0")
        assert split_hub_id(f"{name}@refs/pr/3") == (name, "refs/pr/3")
        assert split_hub_id(f"{name}@") is None and split_hub_id(f"{name}@a b") is None
        (in_tmp / name).mkdir(parents=True)  # an existing directory of that name is local
        assert split_hub_id(name) is None
