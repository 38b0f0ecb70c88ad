"""Hugging Face Hub: download a package by id, upload one (whether a name is a hub id:
:func:`wespeaker_lap.io.sources.split_hub_id`).

Everything goes through ``huggingface_hub`` (installed with transformers), so
its cache (``HF_HUB_CACHE`` / ``HF_HOME``), offline mode (``HF_HUB_OFFLINE=1``)
and token (``HF_TOKEN``, or ``huggingface-cli login``) apply as they do for
transformers.
"""

from __future__ import annotations

import os
from pathlib import Path


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
