"""Progress bars that show on a terminal and stay quiet in logs and CI."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             enabled: bool | None = None, **kwargs) -> tqdm:
    """A tqdm bar, disabled unless stderr is a terminal (or ``enabled`` says otherwise)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(iterable, desc=desc, total=total, disable=not enabled, leave=False,
                dynamic_ncols=True, **kwargs)
