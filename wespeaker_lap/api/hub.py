"""Hugging Face Hub: is a name a hub id, download a package by id, upload one.

Everything goes through ``huggingface_hub`` (installed with transformers), so
its cache (``HF_HUB_CACHE`` / ``HF_HOME``), offline mode (``HF_HUB_OFFLINE=1``)
and token (``HF_TOKEN``, or ``huggingface-cli login``) apply as they do for
transformers.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def split_hub_id(name: str) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` when ``name`` reads as a hub id (``org/name[@revision]``)
    and is not an existing local path; else None.

    This is the one place that decides "local path or hub id" for a model source.

    >>> split_hub_id("org/model@v1.0")
    ('org/model', 'v1.0')
    >>> split_hub_id("./exp/model") is None, split_hub_id("exp/a/b") is None
    (True, True)
    """
    name = os.fspath(name)
    if os.path.exists(name) or name.startswith(("./", "../", "/", "~")):
        return None
    repo, _, revision = name.partition("@")
    if not _HUB_ID.match(repo) or (revision == "" and "@" in name):
        return None
    return repo, revision or None


def download_package(repo_id: str, revision: str | None = None,
                     cache_dir: str | os.PathLike | None = None,
                     token: str | bool | None = None) -> Path:
    """The local snapshot directory of hub model ``repo_id`` at ``revision``.

    Uses ``huggingface_hub.snapshot_download`` (cached; offline with
    ``HF_HUB_OFFLINE=1``). When the files are not available, the error says what
    is missing and how to fetch it.
    """
    import huggingface_hub  # third-party; only a hub source needs it
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    rev = revision or "main"
    fetch = (f"huggingface-cli download {repo_id} --revision {rev}"
             + (f" --cache-dir {cache_dir}" if cache_dir else ""))
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, revision=revision,
                                                      cache_dir=cache_dir, token=token))
    except LocalEntryNotFoundError as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        where = cache_dir or huggingface_hub.constants.HF_HUB_CACHE
        raise FileNotFoundError(
            f"model {repo_id!r} at revision {rev!r} is not in the Hugging Face cache {where}"
            + (" and offline mode is on (HF_HUB_OFFLINE=1)" if offline
               else " and the hub could not be reached")
            + f"; fetch it with `{fetch}` on a machine with network (then copy the cache), "
            f"or load a package directory instead ({type(e).__name__})") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"no model {repo_id!r} on the Hugging Face hub (or it is "
                                "private: set HF_TOKEN or run `huggingface-cli login`)") \
            from None
    except RevisionNotFoundError:
        raise FileNotFoundError(f"model {repo_id!r} has no revision {rev!r}") from None


def push_package(root: str | os.PathLike, repo_id: str, private: bool = False,
                 token: str | None = None, message: str | None = None) -> str:
    """Upload a package directory to hub repo ``repo_id`` (created if needed); the commit URL."""
    import huggingface_hub

    api = huggingface_hub.HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(root), repo_type="model",
                             commit_message=message or "Upload wespeaker-lap model package")
    return str(getattr(info, "commit_url", info))
