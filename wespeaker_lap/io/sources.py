r"""Where a model comes from: a local path or a Hugging Face hub id. One rule, no torch.

Every caller that takes a model name asks :func:`is_local_path` (or
:func:`split_hub_id`, which adds the ``@revision`` suffix of the API's model
sources): the SSL model of a config, at training and extraction time
(:func:`wespeaker_lap.frontend.loading.load_ssl_model`) and when an experiment
is loaded (:func:`wespeaker_lap.frontend.fingerprint.resolve_frontend_args`),
and the source given to :func:`wespeaker_lap.load_model`. It lives here, below
the frontend and free of torch, so that the ONNX path decides the same way.

>>> is_local_path("microsoft/wavlm-base-plus"), is_local_path("wavlm-base")
(False, False)
>>> is_local_path("/models/wavlm"), is_local_path("./wavlm"), is_local_path("exp/ssl/model")
(True, True, True)
>>> split_hub_id("org/model@v1.0"), split_hub_id("org/model"), split_hub_id("./exp/model")
(('org/model', 'v1.0'), ('org/model', None), None)
"""

from __future__ import annotations

import os
import re

#: A hub id: ``name`` or ``org/name``, each part letters, digits, ``_``, ``-``, ``.``, starting
#: with a letter, digit or ``_``.
_HUB_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)?", re.ASCII)
#: A revision after ``@``: a branch, tag or commit (``/`` allowed, as in ``refs/pr/1``).
_REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*", re.ASCII)


def is_local_path(name: str | os.PathLike) -> bool:
    r"""Whether a model name is a local path (True) or a hub id (False).

    * a name that exists on disk is local, whatever its shape (an ``org/name``
      directory under the current directory included), and so is a
      ``pathlib.Path`` (or other ``os.PathLike``): it was made as a path;
    * otherwise a name with the shape of a hub id is a hub id: a bare name
      (``wavlm-base``) or ``org/name`` (``microsoft/wavlm-base-plus``), each
      part made of letters, digits, ``_``, ``-`` and ``.``, not starting with
      ``.`` or ``-``;
    * anything else is local: absolute paths (``/models/x``, ``C:\models\x``,
      ``C:/models/x``, ``\\server\share\x``), paths starting with ``~``,
      ``./``, ``../``, ``.\``, more than one ``/`` (``a/b/c``), any ``\``.
    """
    if not isinstance(name, str):
        return True
    return os.path.exists(name) or _HUB_ID.fullmatch(name) is None


def split_hub_id(name: str | os.PathLike) -> tuple[str, str | None] | None:
    """``(repo_id, revision or None)`` when ``name`` is a hub id, optionally
    ``@revision``; None when it is a local path (:func:`is_local_path`)."""
    if not isinstance(name, str) or os.path.exists(name):
        return None
    repo, at, revision = name.partition("@")
    if at and _REVISION.fullmatch(revision) is None:
        return None
    if is_local_path(repo):
        return None
    return repo, revision or None
