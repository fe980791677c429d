"""The `aidash` command line: the contract scripts, CI and operators rely on.

Exit codes (DESIGN.md): `check` 0 valid / 1 problems / 2 unusable input;
`routes` 0 / 1 if the graph has problems of the error kind / 2 unusable input;
`snapshot` 0 / 1 if a source failed; `record`, `serve` and `demo` run until stopped (0), 1 if
they cannot start (another recorder holds the store, the port is taken, a part failed).
Unusable settings exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from aidash_lib import __version__
from aidash_lib.settings import Settings, SettingsError, load_settings, settings_path
from aidash_lib.yamlfile import Severity, UnusableInput


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

    routes = commands.add_parser(
        "routes", help="the routing graph: groups, deployments, fallback chains; what if X is down",
    )
    routes.add_argument(
        "files", nargs="*", metavar="FILE",
        help="a LiteLLM config, providers and mappings (default: the settings' routing files)",
    )
    routes.add_argument("--json", action="store_true", help="print JSON instead of text")
    routes.add_argument("--model", metavar="M", help="only this group, alias or mapping")
    routes.add_argument(
        "--down", nargs="+", action="extend", default=[], metavar="NAME",
        help="deployment ids, providers or groups to take as down: show where traffic would go",
    )
    routes.set_defaults(run=_run_routes)

    snapshot = commands.add_parser(
        "snapshot", help="one collection from every configured source",
    )
    snapshot.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    snapshot.set_defaults(run=_run_snapshot)

    record = commands.add_parser(
        "record", help="the poller alone: sources -> store, on the configured intervals",
    )
    record.set_defaults(run=_run_record)

    serve = commands.add_parser(
        "serve", help="the recorder (if none runs) and the dashboard in Voila, on 127.0.0.1",
    )
    serve.add_argument("--port", type=int, default=8866, help="the dashboard's port (8866)")
    serve.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on; anything but loopback gets a token",
    )
    serve.add_argument("--open", action="store_true", help="open the dashboard in a browser")
    serve.set_defaults(run=_run_serve)

    demo = commands.add_parser(
        "demo", help="a real LiteLLM proxy with mock deployments and traffic, and the dashboard",
    )
    demo.add_argument("--port", type=int, default=8866, help="the dashboard's port (8866)")
    demo.add_argument("--gateway-port", type=int, default=None, help="the proxy's port")
    demo.add_argument("--rate", type=float, default=None, help="requests per second")
    demo.add_argument("--open", action="store_true", help="open the dashboard in a browser")
    demo.add_argument("--keep", action="store_true", help="keep the store and logs at exit")
    demo.set_defaults(run=_run_demo)
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

    files = args.files or _default_check_files(args)
    report = check_files(files)
    for problem in report.problems:
        print(problem)
    for checked in report.files:
        if not checked.problems:
            print(f"{checked.path}: ok ({checked.kind.value})", file=sys.stderr)
    return report.exit_code


def _default_check_files(args: argparse.Namespace) -> list[str]:
    """The settings file, and the routing files it names when it is valid."""
    from aidash_lib.routing import routing_files

    path = args.config or str(settings_path())
    try:
        return [path, *(str(p) for p in routing_files(load_settings(path)))]
    except (SettingsError, UnusableInput):
        return [path]


def _run_routes(args: argparse.Namespace) -> int:
    from aidash_lib.check import check_files
    from aidash_lib.routing import format_graph, format_what_if, load_graph, routing_files

    try:
        files = args.files or [str(p) for p in routing_files(load_settings(args.config))]
        if not files:
            print("no routing files: give FILES, or set the settings' routing section",
                  file=sys.stderr)
            return 2
        graph = load_graph(files)
    except (SettingsError, UnusableInput) as exc:
        print(exc, file=sys.stderr)
        return 2
    report = check_files(files)
    if report.exit_code == 2:
        for problem in report.problems:
            print(problem, file=sys.stderr)
        return 2
    known = {*graph.entry_names}
    if args.model is not None and args.model not in known:
        print(f"--model {args.model}: no such group, alias or mapping", file=sys.stderr)
        return 2
    down = graph.down_set(args.down)
    if down.unknown:
        print(f"--down: no deployment, provider or group is named {', '.join(down.unknown)}",
              file=sys.stderr)
        return 2
    what_if = graph.what_if(down) if args.down else None
    problems = report.problems
    if args.json:
        data = graph.to_dict()
        data["problems"] = [
            {"path": p.path, "line": p.line, "severity": p.severity.value, "message": p.message}
            for p in problems
        ]
        if args.model is not None:
            data["model"] = {
                "name": args.model, "group": graph.resolve(args.model),
                "route": graph.route(args.model, down=down).to_dict(),
            }
        if what_if is not None:
            data["what_if"] = what_if.to_dict()
        print(json.dumps(data, indent=2, allow_nan=False))
    else:
        print("files: " + ", ".join(graph.files))
        print(format_graph(graph, args.model))
        if what_if is not None:
            print()
            print(format_what_if(what_if, args.model))
        if problems:
            print()
            for problem in problems:
                print(problem)
    return 1 if any(p.severity is Severity.ERROR for p in problems) else 0


def _settings_or_exit(args: argparse.Namespace) -> Settings:
    """The settings in force, or exit 2 with their located problems."""
    try:
        return load_settings(args.config)
    except (SettingsError, UnusableInput) as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None


def _run_record(args: argparse.Namespace) -> int:
    from aidash_lib.recorder import main_record

    return main_record(_settings_or_exit(args))


def _run_serve(args: argparse.Namespace) -> int:
    from aidash_lib.serve import main_serve

    settings = _settings_or_exit(args)
    return main_serve(settings, port=args.port, host=args.host, open_browser=args.open)


def _run_demo(args: argparse.Namespace) -> int:
    from aidash_lib.demo import main_demo

    options = {"rate": args.rate} if args.rate is not None else {}
    return main_demo(port=args.port, gateway_port=args.gateway_port, open_browser=args.open,
                     keep=args.keep, **options)


def _run_snapshot(args: argparse.Namespace) -> int:
    from aidash_lib.snapshot import collect_snapshot
    from aidash_lib.summary import print_snapshot

    settings = _settings_or_exit(args)
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
