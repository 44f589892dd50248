"""``vggt-mv weights inspect|merge``: the load report from file headers/keys, and one-file merging."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vggt_mv.config import ModelConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="list, inspect or merge checkpoint files")
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    q = wsub.add_parser("list", help="the weights known by name: Hub file, size when known, local cache")
    q.add_argument("--json", action="store_true", help="print the table as JSON")
    q.set_defaults(func=_list)
    for name, help_ in (("inspect", "print where each module's weights would come from (no model run)"),
                        ("merge", "load and write the merged model as one .safetensors + manifest")):
        q = wsub.add_parser(name, help=help_)
        q.add_argument("--checkpoint", help="VGGT-1B / PAGE-4D .pt or .safetensors: local path, hf://... or a "
                       "name of `vggt-mv weights list`")
        q.add_argument("--pi3", help="Pi3 model.safetensors: local path, hf://... or pi3")
        q.add_argument("--preset", default=None, help="model preset (default: the one a short name implies; "
                       "vggt_mv when --pi3 is given, else vggt)")
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


def _config(args, checkpoint: Path | None) -> ModelConfig:
    """--config, else the config a vggt-mv ``checkpoint`` carries, else --preset (or the implied one)."""
    from vggt_mv.weights.autoconfig import base_config

    return base_config(config=args.config, preset=args.preset, checkpoint=checkpoint, checkpoint_ref=args.checkpoint,
                       pi3_ref=args.pi3)


def _weights(args) -> tuple[Path | None, Path | None]:
    """--checkpoint / --pi3 as local files (short names and hf:// resolved from the Hub cache)."""
    from vggt_mv.weights.hub import resolve_weights

    if not (args.checkpoint or args.pi3):
        raise ValueError("give --checkpoint and/or --pi3")
    return resolve_weights(args.checkpoint, "--checkpoint"), resolve_weights(args.pi3, "--pi3")


def _list(args) -> int:
    import json

    from vggt_mv.weights.hub import SHORT_NAMES, human_size, hub_cache_dir, weights_table

    rows = weights_table()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"Hugging Face cache: {hub_cache_dir()}")
    print(f"{'name':<14} {'preset':<12} {'size':>12}  {'cached':<6}  file")
    for row in rows:
        cached = "yes" if row["cached"] else "no"
        print(f"{row['name']:<14} {row['preset']:<12} {human_size(row['size']):>12}  {cached:<6}  {row['uri']}")
    for row in rows:
        if not row["cached"]:
            print(f"to fetch {row['name']} ahead of time: {SHORT_NAMES[row['name']].download_command()}")
    return 0


def _inspect(args) -> int:
    from vggt_mv.weights.formats import open_checkpoint
    from vggt_mv.weights.loader import fit_config, plan_files

    checkpoint, pi3 = _weights(args)
    cfg = _config(args, checkpoint)
    ck = open_checkpoint(checkpoint, expect="vggt") if checkpoint else None
    pi = open_checkpoint(pi3, expect="pi3", role="pi3") if pi3 else None
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
    from vggt_mv.weights.hub import parse_weights_ref
    from vggt_mv.weights.loader import check_merged_target, load_model, save_merged

    inputs = [w for w in (args.checkpoint, args.pi3) if w and parse_weights_ref(w) is None] + [args.config]
    check_merged_target(args.out, inputs)
    checkpoint, pi3 = _weights(args)
    model, report = load_model(_config(args, checkpoint), checkpoint=checkpoint, pi3=pi3, recipe=args.recipe,
                               strict=not args.allow_partial)
    path = save_merged(model, args.out, report, inputs=inputs)
    print(report.to_table())
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0
