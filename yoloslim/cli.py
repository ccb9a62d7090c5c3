"""``yoloslim <command>``: the one entry point behind the CLI and the top-level scripts.

Each command is a module in :mod:`yoloslim.commands` with ``NAME``, ``HELP``, ``ORDER``,
``configure(parser)`` and ``run(args) -> int``; new commands are found automatically.
A :class:`~yoloslim.errors.UserError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from types import ModuleType

import yoloslim
from yoloslim.errors import UserError


def command_modules() -> list[ModuleType]:
    import yoloslim.commands as pkg

    mods = [importlib.import_module(f"{pkg.__name__}.{m.name}") for m in pkgutil.iter_modules(pkg.__path__)]
    return sorted((m for m in mods if hasattr(m, "NAME")), key=lambda m: (m.ORDER, m.NAME))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yoloslim",
        description="Make trained YOLO detectors smaller and faster: "
        "train -> sparse -> prune -> finetune/distill -> val -> export. Offline; CPU or CUDA.",
    )
    parser.add_argument("--version", action="version", version=f"yoloslim {yoloslim.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for mod in command_modules():
        if only and mod.NAME != only:
            continue
        cmd = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.__doc__,
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.configure(cmd)
        cmd.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None, command: str | None = None) -> int:
    """Run a command; ``command`` fixes it (used by the top-level scripts)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if command:
        argv = [command, *argv]
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        from yoloslim.offline import disable_telemetry

        disable_telemetry()
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"yoloslim {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"yoloslim {args.command}: interrupted — finished outputs are kept, partial ones were not written",
              file=sys.stderr)
        return 130


def script_main(command: str) -> None:
    """Entry for ``python <command>.py``: same parser, same code as ``yoloslim <command>``."""
    sys.exit(main(command=command))
