"""``vrx discover``: find each class's visual concepts and write the concept bank."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ._common import add_max_pixels_argument, add_model_arguments, max_pixels, model_spec
from ._scale import add_executor_arguments, executor_from

if TYPE_CHECKING:
    from ..concepts.config import ConceptConfig


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``discover`` sub-command."""
    p = sub.add_parser("discover", help="discover each class's visual concepts (ACE + Grad-CAM + TCAV)",
                       description="Segment each class's images, cluster patch features at the model's "
                                   "bottleneck, rank clusters by TCAV and keep the top significant ones.")
    add_model_arguments(p)
    p.add_argument("--images", required=True, help="folder with one sub-folder of images per class")
    p.add_argument("--classes", help="comma-separated class names (default: every sub-folder)")
    p.add_argument("--random", help="folder of random images (default: IMAGES/random)")
    p.add_argument("--out", required=True, help="run folder; concepts go to OUT/concepts/")
    p.add_argument("--preset", choices=("ace", "toyworld"), default="ace",
                   help="starting settings: ACE's defaults (for photos the object fills) or those "
                        "scaled to toyworld's 128 px scenes, as `vrx demo` uses (docs/concepts.md)")
    p.add_argument("--config", help="JSON file of discovery settings (keys not given: ACE's defaults); "
                                    "not with --preset toyworld")
    p.add_argument("--max-images", type=int, help="use at most this many images per class")
    p.add_argument("--no-gradcam", action="store_true", help="switch the Grad-CAM foreground filter off")
    p.add_argument("--compare-gradcam", action="store_true",
                   help="also discover with the filter flipped and report purity for both")
    p.add_argument("--seed", type=int, help="random seed (k-means, random sets, CAVs)")
    p.add_argument("--features", choices=("crop", "map"),
                   help="patch features: each patch cropped and run through the model (crop, ACE's) or "
                        "the whole image's bottleneck map pooled over each segment, one forward per "
                        "image (map); default: the preset's or the config file's")
    add_executor_arguments(p)
    add_max_pixels_argument(p)
    p.set_defaults(func=run)


def discovery_config(args: argparse.Namespace) -> ConceptConfig:
    """The discovery settings the arguments ask for: a preset or a file, then the flags on top."""
    from ..concepts.config import ConceptConfig  # imported here: it pulls in scikit-image

    if args.config and args.preset != "ace":
        raise ConfigError("--config and --preset toyworld both set the settings; give one")
    if args.config:
        config = ConceptConfig.load(args.config)
    else:
        config = ConceptConfig.toyworld() if args.preset == "toyworld" else ConceptConfig()
    if args.no_gradcam:
        config = dataclasses.replace(config, gradcam=dataclasses.replace(config.gradcam, enabled=False))
    if args.seed is not None:
        config = dataclasses.replace(config, seed=args.seed)
    if getattr(args, "features", None):
        config = dataclasses.replace(config, segmentation=dataclasses.replace(config.segmentation,
                                                                              features=args.features))
    return config


def run(args: argparse.Namespace) -> int:
    """Run discovery and print the summary."""
    from .. import stages
    from ..data.images import load_image_folder
    from ..run import Run
    from ..runtime import DISCOVERY_THREADS, threads

    config = discovery_config(args)
    executor = executor_from(args)
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    images = load_image_folder(args.images, classes, random_dir=args.random,
                               max_images_per_class=args.max_images, max_pixels=max_pixels(args))
    spec = model_spec(args)
    adapter = spec.load()
    run = Run(args.out)
    with run.lock(create=True), executor, threads(**DISCOVERY_THREADS):  # the manifest and the bank, as one
        run.write_manifest(spec, args.images)
        _, summary = stages.discover(run, adapter, images, config, compare_gradcam=args.compare_gradcam,
                                     executor=executor)
    print(format_summary(summary))
    print(f"concept bank: {run.concepts_dir}")
    return 0


def format_summary(summary: dict) -> str:
    """Human-readable discovery summary: per class counts and seconds per stage."""
    lines = [f"{'class':<20}{'images':>8}{'patches':>9}{'kept':>7}{'clusters':>10}{'signif.':>9}{'concepts':>10}"]
    for cls, s in summary["per_class"].items():
        lines.append(f"{cls:<20}{s['images']:>8}{s['patches']:>9}{s['patches_kept']:>7}"
                     f"{s['clusters']:>10}{s['significant']:>9}{s['concepts']:>10}")
    for cls, s in summary["per_class"].items():
        if s.get("rejected"):
            lines.append(f"{cls}: left out: {rejection_counts(s['rejected'])} (every cluster's reason: "
                         "concepts/summary.json)")
    lines.append("seconds: " + json.dumps(summary["seconds"]))
    lines.append(f"significance: TCAV two-sided Welch t-test vs random CAVs, and the masking effect's "
                 f"t-test, {summary['correction']} corrected")
    if "purity" in summary:
        for variant, per_class in summary["purity"].items():
            for cls, s in per_class.items():
                lines.append(f"purity [{variant}] {cls}: {s['n_pure']}/{s['n_concepts']} concepts >= "
                             f"{s['threshold']}, part types {s['part_types']}")
    return "\n".join(lines)


def rejection_counts(rejected: dict[str, str]) -> str:
    """"12 by size (e.g. size: 90 patches <= minimum 320), 3 not in the top 4": the rules that left clusters out."""
    groups: dict[str, list[str]] = {}
    for why in rejected.values():
        groups.setdefault(why.split(":")[0].split(" (")[0], []).append(why)
    return ", ".join(f"{len(v)} {k}" + (f" (e.g. {v[0]})" if ":" in v[0] else "") for k, v in groups.items())
