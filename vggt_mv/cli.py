"""``vggt-mv``: the library's command line. Each subcommand lives next to the code it drives and
registers itself through a ``register(subparsers)`` function listed in ``COMMANDS``."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# module -> provides register(subparsers) adding one or more subcommands
COMMANDS = (
    "vggt_mv.inference.cli",  # reconstruct
    "vggt_mv.weights.cli",  # weights inspect / merge
    "vggt_mv.export.video_cli",  # record
    "vggt_mv.export.html_cli",  # export-html
    "vggt_mv.train.cli",  # train
)


class Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (the option, what is wrong, where the
    help is) instead of the whole usage block; subcommand parsers are made of the same class."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vggt-mv",
        description="Multi-view, multi-timestep VGGT / PAGE-4D / Pi3 reconstruction (library CLI).",
    )
    from vggt_mv import __version__

    parser.add_argument("--version", action="version", version=f"vggt-mv {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of errors too (also VGGT_MV_DEBUG=1); allowed anywhere")
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


#: exceptions that are the user's to fix (bad option, file, target): one line, exit code 2
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (multi-line messages joined with '; ')."""
    text = str(error).strip()
    if isinstance(error, OSError) and error.filename and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or type(error).__name__


def debug_enabled(args: argparse.Namespace | None = None) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("VGGT_MV_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted after the subcommand too
    args = parser.parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # the temporary viser server of export-html would log "server listening on ..."
        logging.getLogger("websockets").setLevel(logging.WARNING)
    from vggt_mv import distributed

    distributed.quiet_other_ranks()  # under torchrun only rank 0 logs at INFO
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        if debug_enabled(args):
            import traceback

            traceback.print_exc()
        command = " ".join(c for c in (args.command, getattr(args, "weights_command", None)) if c)
        # every rank runs the same checks before the process group starts: rank 0 alone reports those
        if distributed.is_main_process() or distributed.current() is not None:
            print(f"vggt-mv {command}: error: {distributed.rank_prefix()}{one_line(e)}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # a training run that diverged: every rank stops at the same step
        if debug_enabled(args):
            import traceback

            traceback.print_exc()
        if distributed.is_main_process():
            print(f"vggt-mv {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
