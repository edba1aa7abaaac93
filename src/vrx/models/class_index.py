"""Class names <-> class ids of a classifier: lookup by id, by name (forgiving) or by alias."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, UnknownClassError


def normalize_class_name(name: str) -> str:
    """Case-, space-, underscore- and hyphen-insensitive key of a class name."""
    return re.sub(r"[\s_\-]+", " ", str(name).strip().lower())


class ClassIndex:
    """The class names of a model (unique up to case, spaces, underscores, hyphens) and aliases.

    An alias whose key is already a class name, or whose id is out of range, is ignored.
    """

    def __init__(self, class_names: Sequence[str], aliases: Mapping[str, int] | None = None, *,
                 model: str = "model"):
        self.model = str(model)
        self.names = tuple(str(c) for c in class_names)
        if not self.names:
            raise ConfigError(f"model {self.model!r}: class_names is empty")
        self._index = _name_index(self.names, self.model)
        self.aliases_given = dict(aliases or {})
        self._aliases = {normalize_class_name(a): int(i) for a, i in self.aliases_given.items()
                         if normalize_class_name(a) not in self._index and 0 <= int(i) < len(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def name(self, class_id: int) -> str:
        """The name of class ``class_id`` (an id, a name or an alias)."""
        return self.names[self.id(class_id)]

    def id(self, name_or_id: int | str) -> int:
        """The id of a class given by id, name (case/space/underscore-insensitive) or alias."""
        if isinstance(name_or_id, (int, np.integer)) and not isinstance(name_or_id, bool):
            i = int(name_or_id)
            if 0 <= i < len(self.names):
                return i
            raise UnknownClassError(f"class id {i} is out of range for model {self.model!r} "
                                    f"({len(self.names)} classes: 0..{len(self.names) - 1})")
        if isinstance(name_or_id, str):
            key = normalize_class_name(name_or_id)
            if key in self._index:
                return self._index[key]
            if key in self._aliases:
                return self._aliases[key]
            if key.isdigit():
                return self.id(int(key))
            keys = list(self._index) + list(self._aliases)
            close = difflib.get_close_matches(key, keys, n=8, cutoff=0.6)
            ids = list(dict.fromkeys(self._index.get(k, self._aliases.get(k)) for k in close))[:5]
            hint = (f"; did you mean {', '.join(repr(self.names[i]) for i in ids)}?" if ids else
                    f"; known classes include {', '.join(map(repr, self.names[:5]))}, ...")
            raise UnknownClassError(f"unknown class {name_or_id!r} for model {self.model!r}{hint}")
        raise UnknownClassError(f"class must be a name or an integer id, got {type(name_or_id).__name__}")

    def targets(self, target: Any, n: int) -> list[int]:
        """One class id per image for ``n`` images: one class for all, or one per image."""
        if hasattr(target, "ndim") and hasattr(target, "tolist"):  # a tensor or an array
            target = target.tolist()  # a 0-d one gives its one value
        if isinstance(target, (int, np.integer, str)):
            return [self.id(target)] * n
        ids = [self.id(t) for t in target]
        if len(ids) != n:
            raise ConfigError(f"{len(ids)} targets given for {n} images; give one class or one per image")
        return ids


def _name_index(names: Sequence[str], model: str) -> dict[str, int]:
    index: dict[str, int] = {}
    dupes = []
    for i, n in enumerate(names):
        key = normalize_class_name(n)
        if key in index:
            dupes.append(f"{names[index[key]]!r} ({index[key]}) and {n!r} ({i})")
        index[key] = index.get(key, i)
    if dupes:
        raise ConfigError(f"model {model!r}: class names must be unique (ignoring case, spaces and "
                          f"underscores); clashes: {'; '.join(dupes[:5])}")
    return index
