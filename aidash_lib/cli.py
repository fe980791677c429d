"""The `aidash` command line: the contract scripts, CI and operators rely on.

Exit codes (DESIGN.md): `check` 0 valid / 1 problems / 2 unusable input;
`snapshot` 0 / 1 if a source failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from aidash_lib import __version__
from aidash_lib.settings import SettingsError, load_settings, settings_path
from aidash_lib.yamlfile import UnusableInput


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aidash", description="Operations workbook for a LiteLLM gateway on your own GPUs.",
    )
    parser.add_argument("--version", action="version", version=f"aidash {__version__}")
    parser.add_argument(
        "--config", metavar="FILE",
        help="settings file (default: $AIDASH_CONFIG, else config/dashboard.yaml)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check", help="validate config files; one file:line: message per problem",
    )
    check.add_argument("files", nargs="*", metavar="FILE", help="default: the settings file")
    check.set_defaults(run=_run_check)

    snapshot = commands.add_parser(
        "snapshot", help="one collection from every configured source",
    )
    snapshot.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    snapshot.set_defaults(run=_run_snapshot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130


def _run_check(args: argparse.Namespace) -> int:
    from aidash_lib.check import check_files

    files = args.files or [args.config or str(settings_path())]
    report = check_files(files)
    for problem in report.problems:
        print(problem)
    for checked in report.files:
        if not checked.problems:
            print(f"{checked.path}: ok ({checked.kind.value})", file=sys.stderr)
    return report.exit_code


def _run_snapshot(args: argparse.Namespace) -> int:
    from aidash_lib.snapshot import collect_snapshot
    from aidash_lib.summary import print_snapshot

    try:
        settings = load_settings(args.config)
    except (SettingsError, UnusableInput) as exc:
        print(exc, file=sys.stderr)
        return 2
    # The summary says when there is no GPU driver; the source's one-time warning would repeat it.
    logging.getLogger("aidash_lib.sources.gpu").setLevel(logging.ERROR)
    snapshot = asyncio.run(collect_snapshot(settings))
    if args.json:
        print(json.dumps(snapshot.to_dict(), indent=2, allow_nan=False))
    else:
        print_snapshot(snapshot)
    return 0 if snapshot.ok else 1


if __name__ == "__main__":
    sys.exit(main())
