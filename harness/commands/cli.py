"""The ``harness`` command line: parsing and one thin function per command (``harness --help``
lists them); the work lives in the module each command calls."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from harness import __version__
from harness.commands.select import select_methods
from harness.errors import HarnessError
from harness.registry import KINDS, NameClashWarning
from harness.report.table import markdown

LIST_KINDS = (*KINDS, "suites")


def _host():
    from harness.host import get_host

    return get_host()


# -- list / plugins ----------------------------------------------------------------

def cmd_list(args: argparse.Namespace) -> int:
    kinds = [args.kind] if args.kind else list(LIST_KINDS)
    data: dict[str, list[dict]] = {}
    host = _host() if any(k != "suites" for k in kinds) else None
    for kind in kinds:
        if kind == "suites":
            data[kind] = list_suites()
        else:
            data[kind] = [e.describe() for e in host.registries[kind].entries()]
            for name in sorted(host.registries[kind].conflicts):
                data[kind].append({"name": name, "summary": host.registries[kind].conflict_message(name),
                                   "paper": "", "distribution": "CONFLICT", "version": ""})
    if args.json:
        if host is not None:
            data["broken"] = [{"name": b.name, "distribution": b.source.distribution, "error": b.error}
                              for b in host.broken]
        print(json.dumps(data, indent=2))
        return 0
    for kind, rows in data.items():
        print(f"{kind}:")
        if kind == "suites":
            print(markdown(["name", "description", "profiles", "path"],
                           [[r["name"], r["description"], ", ".join(r["profiles"]), r["path"]] for r in rows]))
        else:
            print(markdown(["name", "description", "paper", "from"],
                           [[r["name"], r["summary"], r["paper"], f"{r['distribution']} {r['version']}".strip()]
                            for r in rows]))
        print()
    if host is not None and host.broken:
        print("broken plugins (not loaded):")
        print(markdown(["plugin", "from", "error"],
                       [[b.name, f"{b.source.distribution} {b.source.version}", b.error] for b in host.broken]))
    return 0


def list_suites() -> list[dict]:
    from harness.suite import builtin_suites
    from harness.suite.tomlsource import load_toml

    rows = []
    for name, path in sorted(builtin_suites().items()):
        raw, _ = load_toml(path)
        rows.append({"name": name, "description": raw.get("suite", {}).get("description", ""),
                     "profiles": sorted({"full", *raw.get("profiles", {})}), "path": str(path)})
    return rows


def cmd_plugins(args: argparse.Namespace) -> int:
    rows = _host().plugins(load=args.load)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(markdown(["plugin", "distribution", "version", "status", "hooks / error"],
                   [[r["name"], r["distribution"], r["version"], r["status"],
                     r.get("error") or ", ".join(h.replace("harness_register_", "") for h in r["hooks"])]
                    for r in rows]))
    return 0


# -- run -----------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from harness.run.options import RunOptions
    from harness.run.selection import parse_shard
    from harness.suite import load_suite

    suite = load_suite(args.suite, args.profile, overrides=args.set or (), seeds=args.seeds)
    host = _host()
    from harness.host import prefer_owner

    prefer_owner(suite.path)  # a plugin package's own suite: its bare names mean its entries
    methods = select_methods(suite, args.quantizer or (), host)
    from harness.run.options import parse_executor_options

    options = RunOptions(device=args.device, data_root=args.data_root, tracking_uri=args.tracking_uri,
                         shard=parse_shard(args.shard) if args.shard else None, bits=args.bits,
                         progress=not args.no_progress, resume=args.resume or args.resume_across_code_change,
                         resume_across_code_change=args.resume_across_code_change, jobs=args.jobs,
                         executor=args.executor, executor_options=parse_executor_options(args.executor_option))
    if args.dry_run:
        from harness.commands.dryrun import print_run

        return print_run(host, suite, methods, options)
    from harness.recovery.diskfull import StoreFull
    from harness.run.lifecycle import run_suite
    from harness.run.rerun import resume_command

    try:
        result = run_suite(suite, methods, options, host)
    except StoreFull as exc:  # one line: what is full, what was saved, how to close and continue
        exc.resume = resume_command(args)
        raise
    except KeyboardInterrupt as exc:
        print(f"\nharness: {exc or 'interrupted'}: the interrupted cells are recorded KILLED (what each "
              f"saved is listed above); to continue: {resume_command(args)}", file=sys.stderr)
        raise
    from harness.run.summary import report

    return report(result, args.suite, args.tracking_uri)


# -- leaderboard / ui ------------------------------------------------------------------

def cmd_leaderboard(args: argparse.Namespace) -> int:
    """Build the page from the store; reading writes nothing (``--log`` publishes it as a run)."""
    from harness.leaderboard.page import build_page, log_page
    from harness.leaderboard.render import RENDERERS
    from harness.leaderboard.source import check_known, open_store, page_source
    from harness.tracking import resolve_uri

    source = page_source(args.suite, args.profile)
    tracker = open_store(args.tracking_uri, write=args.log)
    check_known(source, tracker, args.tracking_uri)
    board = build_page(source.name, tracker=tracker, profile=args.profile, direction_of=_host().higher_is_better,
                       references=source.references, primary=source.primary,
                       default_primary=source.default_primary, description=source.description,
                       claims=source.claims, claim_groups=source.groups or None,
                       run_as=args.suite,
                       plots=args.log or args.format == "html", store=resolve_uri(args.tracking_uri))
    texts = {fmt: render(board) for fmt, render in RENDERERS.items()}
    if args.log and tracker is not None:
        run_id = log_page(tracker, board, texts)
        print(f"logged the page as run {run_id} (harness.kind = leaderboard) in experiment {source.name!r}",
              file=sys.stderr)
    if args.output:
        Path(args.output).write_text(texts[args.format], encoding="utf-8")
        print(f"wrote {args.output}")
    else:
        print(texts[args.format])
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from harness.commands import bench

    return bench.run(args, _host())


def cmd_ui(args: argparse.Namespace) -> int:
    from harness.commands.server import check_port, serve, server_command, server_env
    from harness.tracking import resolve_uri

    uri = resolve_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):  # a tracking server serves its own UI
        print(f"{uri} is a tracking server: its UI is at {uri}")
        return 0
    check_port(args.host, args.port)
    command = server_command(uri, None, args.host, args.port, args.workers, subcommand="ui")
    print(f"MLflow UI for {uri} at http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    return serve(command, server_env())


def cmd_server(args: argparse.Namespace) -> int:
    from harness.commands.server import backend_uri, check_port, serve, server_command, server_env

    backend = backend_uri(args.backend_store_uri)
    check_port(args.host, args.port)
    artifacts = args.artifacts_destination or str(Path("mlartifacts").resolve())
    command = server_command(backend, artifacts, args.host, args.port, args.workers)
    print(f"MLflow tracking server for {backend} (artifacts in {artifacts}) at "
          f"http://{args.host}:{args.port}\nclients: harness run SUITE --tracking-uri "
          f"http://{args.host}:{args.port} (Ctrl-C stops the server and all its processes)", flush=True)
    return serve(command, server_env())


# -- doctor ----------------------------------------------------------------------------

def cmd_doctor(args: argparse.Namespace) -> int:
    from harness.commands.doctor import diagnose, render

    if args.data_root is not None and args.dataset is None:
        from harness.errors import UsageError

        raise UsageError("--data-root is one dataset's folder: name it with --dataset")
    report = diagnose(_host(), args.data_root, args.dataset)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


# -- new -------------------------------------------------------------------------------

def cmd_new(args: argparse.Namespace) -> int:
    from harness.commands.scaffold import (
        PluginNames,
        editable_warning,
        harness_requirement,
        install_command,
        scaffold_quantizer,
    )

    folder = scaffold_quantizer(args.name, args.dir, harness_source=args.harness_source)
    names = PluginNames.from_name(args.name)
    requirement = harness_requirement(args.harness_source)
    print(f"wrote the {names.distribution} plugin package to {folder}\n"
          f"next: cd {folder} && {install_command(requirement)} && harness run toy2d -q {args.name} "
          "--profile smoke")
    note = editable_warning(requirement)
    if note:
        print(f"harness: {note}", file=sys.stderr)
    return 0


# -- parser ----------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__)
    parser.add_argument("--version", action="version", version=f"vq-harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered plugins of a kind, or suites")
    p.add_argument("kind", nargs="?", choices=LIST_KINDS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("plugins", help="list installed plugins, their distributions and hooks")
    p.add_argument("--json", action="store_true")
    p.add_argument("--load", action="store_true",
                   help="also import every registered class (slow: torch) and show the ones that fail")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("run", help="run a suite (registered name or path to a .toml file)")
    p.add_argument("suite")
    p.add_argument("-q", "--quantizer", action="append", metavar="NAME",
                   help="run only these methods or quantizers (repeatable)")
    p.add_argument("--profile", default="full",
                   help="full (the default: the suite as written), smoke, or one of the suite's own (toy2d: all)")
    p.add_argument("--seeds", type=int, help="number of seeds per configuration")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a suite key (repeatable)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    p.add_argument("--shard", metavar="I/N", help="run the I-th of N interleaved slices of the cells (1-based)")
    p.add_argument("--bits", type=float, metavar="B",
                   help="only the cells at B bits per token (one leaderboard rate group, e.g. 8)")
    p.add_argument("--dry-run", action="store_true", help="list and count the cells it would run; run nothing")
    p.add_argument("--data-root", type=Path, help="dataset folder (default $HARNESS_DATA/<dataset>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--resume", action="store_true",
                   help="skip cells already finished, continue interrupted ones from their checkpoint")
    p.add_argument("--resume-across-code-change", action="store_true",
                   help="--resume, and continue an interrupted cell from its checkpoint even when its "
                        "plugin code changed since (by default such a cell starts afresh)")
    p.add_argument("--jobs", type=_positive_int, default=None, metavar="N",
                   help="run N cells at once in worker processes (shorthand for --executor processes "
                        "--executor-option jobs=N; wins over the suite's and harness.toml's jobs)")
    p.add_argument("--executor", metavar="NAME",
                   help="where cells run: processes (default: each cell isolated in a worker process), "
                        "local (in this process, for debugging), or a plugin's (`harness list executors`); "
                        "a suite's [executor] table or ./harness.toml may set it")
    p.add_argument("--executor-option", action="append", metavar="KEY=VALUE",
                   help="an option of the executor, e.g. jobs=4 or watchdog=600 (repeatable)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("leaderboard", help="rank a suite's recorded runs (reads only; --log publishes the page)")
    p.add_argument("suite", help="a registered suite, a suite file (ranked by its own primary metric), "
                   "or a suite name recorded in the store")
    p.add_argument("--format", choices=("md", "html", "csv", "json"), default="md")
    p.add_argument("--output", type=Path)
    p.add_argument("--profile", help="full or smoke (default: full if recorded, else smoke)")
    p.add_argument("--tracking-uri")
    p.add_argument("--log", action="store_true",
                   help="also record the page as a `leaderboard` run in the suite's experiment (reading alone writes nothing)")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("bench", help="time forward+backward and peak memory of quantizers")
    p.add_argument("-q", "--quantizer", action="append", metavar="NAME", help="only these (repeatable)")
    p.add_argument("--tokens", type=int, nargs="+", default=[4096, 65536])
    p.add_argument("--codes", type=int, nargs="+", default=[1024, 65536])
    p.add_argument("--dims", type=int, nargs="+", default=[8, 64])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--peer", action="store_true", help="also run vector-quantize-pytorch (pip install vq-harness[bench])")
    p.add_argument("--search", action="store_true", help="nearest-code search vs matmul+argmin at 131,072 x 65,536 x 64")
    p.add_argument("--tracking-uri")
    p.add_argument("--no-track", action="store_true", help="print only; record nothing in MLflow")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("ui", help="MLflow's UI for the same store, on 127.0.0.1")
    p.add_argument("--tracking-uri")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=_positive_int, default=2, help="web server processes (default 2)")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("server", help="an MLflow tracking server (PostgreSQL or SQLite) for many writers")
    p.add_argument("--backend-store-uri", default="sqlite:///mlflow.db",
                   help="database URI, e.g. postgresql://user@127.0.0.1:5432/mlflow (default sqlite:///mlflow.db)")
    p.add_argument("--artifacts-destination", help="where artifacts go (default ./mlartifacts)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=_positive_int, default=2, help="web server processes (default 2)")
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("doctor", help="which datasets and metric weights are on this machine, and where missing ones go")
    p.add_argument("--dataset", help="check only this dataset")
    p.add_argument("--data-root", type=Path, help="the --dataset's folder (default $HARNESS_DATA/<dataset>)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("new", help="write a new plugin package to edit (see docs/tutorial.md)")
    new_sub = p.add_subparsers(dest="kind", required=True)
    q = new_sub.add_parser("quantizer", help="a quantizer plugin: package, entry point, tests, README")
    q.add_argument("name", help="the quantizer's registry name, e.g. my-vq")
    q.add_argument("--dir", type=Path, help="the package folder to create (default ./harness-NAME)")
    q.add_argument("--harness-source", metavar="SOURCE", help="where the package gets the harness: a git URL, "
                   "a wheel, or a requirement (default $HARNESS_SOURCE, else the harness's git repository)")
    q.set_defaults(func=cmd_new)

    from harness.recovery.repair import add_parser as add_runs_parser  # harness runs repair

    add_runs_parser(sub)
    # harness tune takes run's parser as its parent
    from harness.commands.tune import add_parser as add_tune_parser

    add_tune_parser(sub)
    from harness.commands import diagnose  # harness diagnose RUN_ID

    diagnose.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=NameClashWarning)  # the registry prints it on stderr
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here, inside the handler below, not at exit
        return code
    except BrokenPipeError:  # `harness leaderboard | head`: the reader has gone, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141  # what a shell reports for a process ended by SIGPIPE
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a full disk where no command handled it (harness run does): one line
        from harness.recovery.diskfull import disk_full_line

        line = disk_full_line(exc, getattr(args, "tracking_uri", None))
        if line is None:
            raise
        print(f"harness: error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # harness.recovery.interrupt.Interrupted carries 130 or 143
        if not hasattr(exc, "exit_code"):
            print("harness: interrupted", file=sys.stderr)
        return getattr(exc, "exit_code", 130)


def entry() -> None:
    """The ``harness`` command: :func:`main`, then an exit without the interpreter's final garbage
    collection (1 to 2 s once torch and MLflow are loaded; see :func:`freeze_for_exit`)."""
    from harness.contracts.executor import freeze_for_exit

    code = main()
    freeze_for_exit()
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
