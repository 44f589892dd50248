"""``vggt-mv weights inspect|merge``: the load report from file headers/keys, and one-file merging."""
from __future__ import annotations

import argparse
import sys

from vggt_mv.config import ModelConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="inspect or merge checkpoint files")
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    for name, help_ in (("inspect", "print where each module's weights would come from (no model run)"),
                        ("merge", "load and write the merged model as one .safetensors + manifest")):
        q = wsub.add_parser(name, help=help_)
        q.add_argument("--checkpoint", help="VGGT-1B / PAGE-4D .pt or .safetensors")
        q.add_argument("--pi3", help="Pi3 model.safetensors")
        q.add_argument("--preset", default=None, help="model preset (default: vggt_mv when --pi3 is given, else vggt)")
        q.add_argument("--config", help="a model_config.json instead of a preset")
        q.add_argument("--recipe", default="seed", choices=["seed", "checkpoint_first"])
        q.add_argument("--allow-partial", action="store_true",
                       help="accept files that do not cover the whole model (default: that is an error)")
        if name == "inspect":
            q.add_argument("--json", action="store_true", help="print the report as JSON")
            q.set_defaults(func=_inspect)
        else:
            q.add_argument("--out", required=True, help="output .safetensors path")
            q.set_defaults(func=_merge)


def _config(args) -> ModelConfig:
    if not (args.checkpoint or args.pi3):
        raise ValueError("give --checkpoint and/or --pi3")
    if args.config:
        return ModelConfig.from_json(args.config)
    return ModelConfig.preset(args.preset or ("vggt_mv" if args.pi3 else "vggt"))


def _inspect(args) -> int:
    from vggt_mv.weights.formats import open_checkpoint
    from vggt_mv.weights.loader import fit_config, plan_files

    cfg = _config(args)
    ck = open_checkpoint(args.checkpoint, expect="vggt") if args.checkpoint else None
    pi = open_checkpoint(args.pi3, expect="pi3", role="pi3") if args.pi3 else None
    cfg, choices = fit_config(cfg, ck)
    _, report, _ = plan_files(cfg, ck, pi, args.recipe, choices)
    print(report.to_json() if args.json else report.to_table())
    problems = report.strict_problems()
    if problems and not args.allow_partial:
        print(f"vggt-mv weights inspect: error: the files do not fit the {cfg.name!r} model: {problems}; "
              "check --preset/--config (or --allow-partial to accept it)", file=sys.stderr)
        return 2
    return 0


def _merge(args) -> int:
    from vggt_mv.weights.loader import check_merged_target, load_model, save_merged

    inputs = [args.checkpoint, args.pi3, args.config]
    check_merged_target(args.out, inputs)
    model, report = load_model(_config(args), checkpoint=args.checkpoint, pi3=args.pi3, recipe=args.recipe,
                               strict=not args.allow_partial)
    path = save_merged(model, args.out, report, inputs=inputs)
    print(report.to_table())
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0
