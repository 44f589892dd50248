"""``vggt-mv``: the library's command line. Each subcommand lives next to the code it drives and
registers itself through a ``register(subparsers)`` function listed in ``COMMANDS``."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# module -> provides register(subparsers) adding one or more subcommands
COMMANDS = (
    "vggt_mv.inference.cli",  # reconstruct
    "vggt_mv.weights.cli",  # weights inspect / merge
    "vggt_mv.export.video_cli",  # record
    "vggt_mv.export.html_cli",  # export-html
    "vggt_mv.train.cli",  # train
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vggt-mv",
        description="Multi-view, multi-timestep VGGT / PAGE-4D / Pi3 reconstruction (library CLI).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue  # that part of the library is not installed in this build
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"vggt-mv {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
