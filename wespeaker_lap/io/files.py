"""Small file helpers shared by every stage: atomic writes and Kaldi-style tables.

Everything a stage produces (checkpoints, embeddings, scores, lists) is written
through :func:`atomic_write` / :func:`atomic_path`, so an interrupted run never
leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from wespeaker_lap.checks import ConfigError

logger = logging.getLogger(__name__)

#: The UTF-8 byte-order mark as text (``"\ufeff"``) and as bytes.
BOM = "\ufeff"
BOM_BYTES = BOM.encode("utf-8")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_disk_full(e: BaseException) -> bool:
    """An ``OSError`` that says the disk (or the user's quota) is full."""
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def not_a_file(path: str | os.PathLike, what: str = "file") -> str | None:
    """Why ``path`` is no regular file to read (None when it is one).

    ``no such {what}: P`` when nothing is there, else what is there instead: a
    directory, a FIFO (reading one would block), a socket or a device.

    >>> not_a_file("/")
    '/ is a directory, not a file'
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"no such {what}: {path}"
    except OSError as e:
        return f"{path}: {e.strerror or e}"
    if stat.S_ISREG(mode):
        return None
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a device")
    return f"{path} is {kind}, not a {what}"


class DiskFullError(OSError):
    """A full disk, named: the file written and the free space (:func:`disk_full_error`)."""


def disk_full_error(e: BaseException, path: str | os.PathLike, what: str = "file") -> OSError:
    """``OSError(ENOSPC)`` naming ``path`` and the free space left where it goes.

    What every writer raises on a full disk (training's checkpoints included),
    so that the message says which file and how much room there is, and that
    ``path`` was left as it was (the writes go to a temporary file first).
    """
    path = Path(path)
    try:
        free = shutil.disk_usage(path.parent if str(path.parent) else ".").free
    except OSError:
        free = None
    left = f"; {free / 2**20:.1f} MiB free there" if free is not None else ""
    return DiskFullError(errno.ENOSPC, f"no space left on device: writing the {what} {path} failed "
                   f"({getattr(e, 'strerror', None) or e}){left}; {path} was left as it was",
                   str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same directory; rename it to ``path`` on success.

    Use it for writers that want a file name (``torch.save``, ``kaldiio``,
    ``soundfile``). On an exception the temporary file is removed and ``path``
    is untouched.

    >>> import tempfile, pathlib
    >>> d = tempfile.mkdtemp()
    >>> with atomic_path(pathlib.Path(d) / "x.txt") as tmp:
    ...     _ = tmp.write_text("hi")
    >>> (pathlib.Path(d) / "x.txt").read_text()
    'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would,
        # after the writer too: some (safetensors) write a fresh file of their own
        mode = 0o666 & ~_umask()
        os.chmod(tmp_path, mode)
        yield tmp_path
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if is_disk_full(e) and not isinstance(e, DiskFullError):
            raise disk_full_error(e, path) from e
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temporary file for writing; it replaces ``path`` only when the block succeeds."""
    if "b" in mode:
        encoding = None
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as f:
        yield f


def strip_bom(first_line: str, path: str | os.PathLike) -> str:
    """``first_line`` without a leading UTF-8 byte-order mark, with a warning naming ``path``.

    Editors on Windows start UTF-8 files with the mark; read as UTF-8 it would
    become an invisible part of the first key (``"\ufeffu1"`` is not ``"u1"``).

    >>> strip_bom("u1 spk1", "utt2spk")
    'u1 spk1'
    """
    if first_line.startswith(BOM):
        logger.warning("%s starts with a UTF-8 byte-order mark; ignoring it", os.fspath(path))
        return first_line[len(BOM):]
    return first_line


def text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 text table.

    A leading byte-order mark is stripped with a warning (:func:`strip_bom`); a
    line in another encoding is a ``ValueError`` naming the file, line and byte.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                    f"{e.start + 1}); re-encode the file, e.g. `iconv -f latin1 -t utf-8`"
                ) from None
            yield lineno, strip_bom(line, path) if lineno == 1 else line


def read_table(
    path: str | os.PathLike, min_fields: int = 2, max_fields: int | None = 2
) -> list[list[str]]:
    """Read a Kaldi-style table: one record a line, fields split on whitespace.

    With ``max_fields == 2`` the second field keeps any inner spaces (as in
    ``wav.scp`` lines whose value is a path with spaces). Blank lines are
    skipped. A line with too few or too many fields raises ``ValueError``
    naming the file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    rows = []
    for lineno, line in text_lines(path):
        line = line.strip()
        if not line:
            continue
        fields = line.split(maxsplit=1) if max_fields == 2 else line.split()
        if len(fields) < min_fields or (max_fields is not None and len(fields) > max_fields):
            want = (
                f"{min_fields}" if min_fields == max_fields
                else f"{min_fields}..{max_fields if max_fields is not None else 'n'}"
            )
            raise ValueError(
                f"{path}:{lineno}: expected {want} fields, got {len(fields)}: {line!r}"
            )
        rows.append(fields)
    return rows


def read_scp(path: str | os.PathLike) -> dict[str, str]:
    """Read a two-column table (``wav.scp``, ``utt2spk``) into a dict; duplicate keys are errors."""
    out: dict[str, str] = {}
    for key, value in read_table(path, 2, 2):
        if key in out:
            raise ValueError(f"{path}: duplicate key {key!r}")
        out[key] = value
    return out


def read_utt2dur(path: str | os.PathLike) -> dict[str, float]:
    """Read a Kaldi ``utt2dur`` (``utt seconds``): the one parser of these files.

    A value that is not a positive finite number, or a key given twice, is a
    ``ValueError`` naming the file and the key.
    """
    out: dict[str, float] = {}
    for key, value in read_table(path, 2, 2):
        try:
            dur = float(value)
        except ValueError:
            raise ValueError(f"{path}: bad duration {value!r} for {key!r}") from None
        if not dur > 0 or not math.isfinite(dur):
            raise ValueError(f"{path}: duration of {key!r} must be positive, got {value}")
        if key in out:
            raise ValueError(f"{path}: duration of {key!r} given twice")
        out[key] = dur
    return out


def write_table(path: str | os.PathLike, rows: Iterable[Iterable[str]]) -> None:
    """Write rows of fields, space separated, atomically."""
    with atomic_write(path) as f:
        for row in rows:
            f.write(" ".join(str(x) for x in row) + "\n")


# ------------------------------------------------------------------------- YAML
class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_load(text_or_stream: Any) -> Any:
    """``yaml.safe_load`` plus floats written ``1e-3``."""
    return yaml.load(text_or_stream, Loader=_Loader)  # a SafeLoader subclass: safe


def yaml_error_text(path: str | os.PathLike, e: yaml.YAMLError) -> str:
    """``path:line:col: what`` for a YAML error (its problem mark), without a traceback."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    text = f"{context}: {problem}" if context and problem not in str(context) else problem
    if "python/" in str(e):
        text += " (python tags are refused: a config is plain YAML)"
    return f"{where}: not valid YAML: {text}"


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML mapping from ``path`` (an empty file is ``{}``); anything else is ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml_load(f)
    except yaml.YAMLError as e:  # a syntax error, or a tag such as !!python/object (refused)
        raise ConfigError(yaml_error_text(path, e)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a YAML mapping, got {type(data).__name__}")
    return data
