"""``vrx sensitivity``: the paper's Figure 7 experiments on toyworld, as rates over many images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sensitivity`` sub-command."""
    p = subparsers.add_parser(
        "sensitivity", help="structural and visual sensitivity of explanations (toyworld)",
        description="For each toyworld image, edit the part under a detected concept of its class "
                    "(structural: move it to an implausible place; visual: swap it for another class's "
                    "part), rebuild the graphs and explain again; report how often the relations' "
                    "(structural) or the concept's (visual) contribution falls.")
    p.add_argument("--run", required=True, type=Path, help="run folder with concepts/, graphs/ and grn/")
    p.add_argument("--trust-run", action="store_true",
                   help="load a python: model spec from RUN/run.json (it runs that Python code)")
    p.add_argument("--images", required=True, type=Path, help="rendered toyworld folder (scene JSON beside each image)")
    p.add_argument("--n", type=int, default=50, help="images to measure per experiment (default 50)")
    p.add_argument("--split", choices=("test", "all"), default="test",
                   help="test: only images of the GRN's test split (default); all: every image in --images")
    p.add_argument("--out", type=Path, help="write all records as JSON here")
    p.add_argument("--pick", choices=("contribution", "rank"), default="contribution",
                   help="which eligible concept to edit: largest contribution before (default) or best rank")
    p.add_argument("--any-sign", action="store_true",
                   help="also edit concepts whose measure is not positive before the edit (default: only positive ones)")
    p.add_argument("--visual-edit", choices=("swap", "distort"), default="swap",
                   help="swap: another class's part type (default); distort: inverted colours")
    p.add_argument("--min-share", type=float, default=0.5,
                   help="share of the concept's patch that must lie on one part type (default 0.5)")
    p.add_argument("--control", action="store_true",
                   help="also run the control (only the pixel noise redrawn) for both measures")
    p.add_argument("--seed", type=int, default=0, help="seed of replacement types and colours")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run both experiments (and the controls); print the rates; 1 when nothing could be measured."""
    from ..errors import ConfigError, EmptyFolderError
    from ..experiments import SensitivityConfig, SensitivityExperiment, interleaved_images
    from ..run import Run
    from ..runtime import threads
    from ..store import write_json

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    if args.out is not None and args.out.is_dir():
        raise ConfigError(f"--out {args.out}: is a folder; give the JSON file's name")
    folder = Run(args.run, trust_code=args.trust_run)
    only = folder.test_images() if args.split == "test" else None
    images = interleaved_images(args.images, only)
    if not images:
        raise EmptyFolderError(f"{args.images}: none of its images is in the test split of {args.run}; "
                               "use --split all for images the run has not seen")
    exp = SensitivityExperiment(folder, SensitivityConfig(pick=args.pick, min_share=args.min_share,
                                                          positive_only=not args.any_sign, seed=args.seed))
    plan = [("structural", "move"), ("visual", args.visual_edit)]
    if args.control:
        plan += [("structural", "noise"), ("visual", "noise")]
    results = {}
    for kind, edit in plan:
        with threads(torch_threads=args.threads):
            res = exp.run(images, kind, edit, limit=args.n)
        results[f"{kind}/{edit}"] = res
        print(res.summary() + f" ({res.seconds:.0f} s)")
    if args.out:
        write_json(args.out, {"run": str(args.run), "images": str(args.images), "split": args.split,
                              "results": {k: r.to_dict() for k, r in results.items()}})
        print(f"wrote {args.out}")
    if any(r.n == 0 for r in results.values()):
        print("vrx sensitivity: error: some experiment measured no image (see the skip reasons in --out)",
              file=sys.stderr)
        return 1
    return 0
