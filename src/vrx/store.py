"""Run-folder I/O: atomic writes, tensors in safetensors, metadata in JSON, content hashes.

Every write goes to a temporary file beside the target and is moved into place with
``os.replace``, so a crash never leaves half a file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .errors import ArtifactError


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return _atomic(Path(path), lambda fh: fh.write(data))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (NumPy scalars and arrays are converted)."""
    text = json.dumps(obj, indent=2, default=_json_default, sort_keys=False) + "\n"
    return write_bytes(path, text.encode())


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON, raising ArtifactError that names the file when it is missing or corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None


#: The key under which :func:`seal` records the hash of a metadata record's own content.
SEAL_KEY = "meta_hash"


def seal(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` with the hash of its own content added, so that :func:`check_seal` finds any later
    edit (a deleted key would otherwise quietly take its default)."""
    body = {k: v for k, v in meta.items() if k != SEAL_KEY}
    return {**body, SEAL_KEY: _meta_digest(body)}


def check_seal(meta: Mapping[str, Any], path: str | os.PathLike, remedy: str) -> None:
    """ArtifactError when ``meta`` was sealed and has changed since (a record without a seal passes)."""
    recorded = meta.get(SEAL_KEY)
    if recorded is not None and recorded != _meta_digest({k: v for k, v in meta.items() if k != SEAL_KEY}):
        raise ArtifactError(f"{path}: edited or damaged since vrx wrote it (its {SEAL_KEY} does not "
                            f"match); {remedy}")


def _meta_digest(meta: Mapping[str, Any]) -> str:
    # Through JSON and back first, so the digest is that of what the file holds (tuples as lists,
    # NumPy scalars as numbers).
    normal = json.loads(json.dumps(meta, default=_json_default))
    return content_hash(json.dumps(normal, sort_keys=True))


def check_format_version(record: Mapping[str, Any], key: str, version: int, what: str) -> None:
    """ArtifactError unless ``record[key]`` is ``version``: '<what> version 2, this vrx reads 1'."""
    if record.get(key) != version:
        raise ArtifactError(f"{what} version {record.get(key)!r}, this vrx reads {version}")


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor | np.ndarray],
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Save named tensors to a safetensors file atomically."""
    path = Path(path)
    data = {k: (torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v)
            .detach().cpu().contiguous() for k, v in tensors.items()}
    # safetensors writes by path, so the temporary file is named rather than passed as a handle.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(data, tmp, metadata=dict(metadata) if metadata else None)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors file, raising ArtifactError that names the file on failure."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: missing")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise ArtifactError(f"{path}: not a readable safetensors file ({exc})") from None


def content_hash(*parts: bytes | str | np.ndarray | torch.Tensor, length: int = 16) -> str:
    """A short, stable hex digest of the given byte strings, strings and arrays."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, torch.Tensor):
            part = part.detach().cpu().contiguous().numpy()
        if isinstance(part, np.ndarray):
            h.update(str((part.dtype.str, part.shape)).encode())
            part = np.ascontiguousarray(part).tobytes()
        elif isinstance(part, str):
            part = part.encode()
        h.update(part)
        h.update(b"\x00")
    return h.hexdigest()[:length]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
