"""The ``gqn-gym`` command line tool.

Subcommands::

    gqn-gym tour      render frames and the map of a scene to PNG files
    gqn-gym demo      the README's demo

Run ``gqn-gym <command> --help`` for the options of each.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run_example(name: str, argv: list[str]) -> None:
    script = EXAMPLES / f"{name}.py"
    if not script.exists():
        raise SystemExit(f"{script} not found: the examples ship with the source checkout")
    sys.argv = [str(script), *argv]
    runpy.run_path(str(script), run_name="__main__")


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``gqn-gym`` and ``python -m gqn_env.cli``."""
    parser = argparse.ArgumentParser(prog="gqn-gym", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tour", help="render frames and the top-down map of a scene", add_help=False)
    sub.add_parser("demo", help="the README's demo", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command in ("tour", "demo"):
        _run_example("scene_tour", rest)


if __name__ == "__main__":
    main()
