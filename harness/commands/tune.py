"""``harness tune SUITE``: the suite's tuning protocol, then its seeds at the chosen settings.

It takes every option of ``harness run`` (the same parser is its parent), so a
tuned run is selected, sharded, resumed and sent to executors exactly like a run.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from harness.report.table import markdown


def add_parser(sub: Any) -> None:
    """``tune`` with ``run``'s arguments (``-q``, ``--set``, ``--seeds``, ``--shard``, ``--resume``, ...)."""
    run = sub.choices["run"]
    p = sub.add_parser("tune", parents=[run], add_help=False, conflict_handler="resolve",
                       help="tune every method on the selection split (the suite's [tuning]), then run "
                            "its seeds at the chosen settings")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from harness.commands.select import select_methods
    from harness.host import get_host, prefer_owner
    from harness.run.options import RunOptions, parse_executor_options
    from harness.run.selection import parse_shard
    from harness.run.tune import tune_suite
    from harness.suite import load_suite

    suite = load_suite(args.suite, args.profile, overrides=args.set or (), seeds=args.seeds)
    host = get_host()
    prefer_owner(suite.path)  # a plugin package's own suite: its bare names mean its entries
    methods = select_methods(suite, args.quantizer or (), host)
    options = RunOptions(device=args.device, data_root=args.data_root, tracking_uri=args.tracking_uri,
                         shard=parse_shard(args.shard) if args.shard else None, bits=args.bits,
                         progress=False, resume=args.resume or args.resume_across_code_change,
                         resume_across_code_change=args.resume_across_code_change, jobs=args.jobs,
                         executor=args.executor, executor_options=parse_executor_options(args.executor_option))
    if args.dry_run:
        from harness.commands.dryrun import print_tune

        return print_tune(host, suite, methods, options)
    try:
        result = tune_suite(suite, methods, options, host)
    except KeyboardInterrupt as exc:
        from harness.run.rerun import resume_command

        again = resume_command(args).replace("harness run ", "harness tune ", 1)
        print(f"\nharness: {exc or 'interrupted'}: to continue: {again}", file=sys.stderr)
        raise
    return report(result, args)


def choice_table(result: Any) -> str:
    from harness.suite.tuning import describe

    rows = []
    for (method, k, d), choice in result.choices.items():
        trials = "; ".join(f"{describe(t.values)}: {'-' if t.score is None else f'{t.score:.4g}'} "
                           f"({t.status.lower()}, {t.seconds:.0f} s)" for t in choice.trials)
        rows.append([method, k, d, describe(choice.values) if choice.values else "undecided",
                     f"{choice.cost:.0f}", trials])
    return markdown(["method", "K", "dim", "chosen", "cost (s)", f"trials ({result.tuning.metric} on "
                     f"{result.tuning.split})"], rows)


def report(result: Any, args: argparse.Namespace) -> int:
    from harness.run import summary

    t = result.tuning
    print(f"\ntuning ({t.budget} trials per configuration, {t.direction} {t.metric} on the "
          f"{t.split!r} split; tuning run {result.tuning_run_id}):\n" + choice_table(result))
    for note in result.notes:
        print(f"harness: {note}", file=sys.stderr)
    failed_trials = [r for r in result.trials if r.status not in ("FINISHED", "SKIPPED")]
    if result.tuned is None:
        print("harness: no configuration decided: no tuned cells ran", file=sys.stderr)
        return 1
    code = summary.report(result.tuned, args.suite, args.tracking_uri)
    return 1 if failed_trials or result.notes else code
