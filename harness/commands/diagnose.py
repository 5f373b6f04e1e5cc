"""``harness diagnose RUN_ID``: one cell's collapse diagnosis, and a plain sentence on what it suggests.

Reads what the cell recorded (:mod:`harness.cell.diagnosis`: ``diagnosis.json``,
else its ``diag/*`` metrics) and its eval metrics; writes nothing. Every
threshold behind a sentence is in :class:`Thresholds` (the collapse itself is
:mod:`harness.leaderboard.collapse`'s rule, the one the leaderboard flags);
docs/diagnosis.md says why each has its value.
"""

from __future__ import annotations

import argparse
import difflib
import json
from dataclasses import dataclass
from typing import Any

from harness.errors import UsageError
from harness.leaderboard.collapse import UTILIZATION_BELOW, seed_collapse


@dataclass(frozen=True)
class Thresholds:
    """When a measurement at step 0 is named as a cause (docs/diagnosis.md justifies each value)."""

    #: codes this many times longer (or shorter) than the latents: a scale mismatch
    scale_ratio: float = 10.0
    #: latents whose mean cosine to their mean direction is above this point one way
    aligned_cosine: float = 0.9
    #: fewer than this fraction of the codes winning a token at step 0: few winners
    few_winners: float = 0.05


THRESHOLDS = Thresholds()


def add_parser(sub: Any) -> None:
    p = sub.add_parser("diagnose", help="one cell's collapse diagnosis (latent vs code scale, codes won at "
                                        "init, dead codes over time) and what it suggests")
    p.add_argument("run_id", help="the cell's MLflow run id (a unique prefix is enough)")
    p.add_argument("--tracking-uri")
    p.add_argument("--json", action="store_true", help="print the recorded diagnosis and the verdict as JSON")
    p.set_defaults(func=cmd_diagnose)


def cmd_diagnose(args: argparse.Namespace) -> int:
    from harness.leaderboard.source import open_store
    from harness.tracking import resolve_uri

    tracker = open_store(args.tracking_uri)
    if tracker is None:
        raise UsageError(f"no tracking store at {resolve_uri(args.tracking_uri)} (run a suite first, "
                         "or pass --tracking-uri)")
    run = find_run(tracker, args.run_id)
    report = load_report(tracker, run)
    metrics = {k[5:]: v for k, v in run.data.metrics.items() if k.startswith("eval/")}
    size = int(run.data.tags.get("harness.codebook_size", 0) or 0)
    tokens = int(run.data.tags.get("harness.eval_tokens", 0) or 0) or None
    sentence = verdict(report, metrics, size, eval_tokens=tokens)
    if args.json:
        print(json.dumps({"run_id": run.info.run_id, "diagnosis": report, "eval": metrics,
                          "verdict": sentence}, indent=2, sort_keys=True))
    else:
        print(describe(run, report, metrics) + "\n\n" + sentence)
    return 0


def find_run(tracker: Any, wanted: str) -> Any:
    """The cell run with this id or unique id prefix; an unknown id names close ones."""
    try:
        return tracker.get_run(wanted)
    except Exception:  # not a full id of this store: try it as a prefix
        pass
    ids = [r.info.run_id for name in tracker.experiment_names()
           for r in tracker.runs(name, "tags.`harness.kind` = 'cell'")]
    matches = [i for i in ids if i.startswith(wanted)] if wanted else []
    if len(matches) == 1:
        return tracker.get_run(matches[0])
    if len(matches) > 1:
        raise UsageError(f"run id prefix {wanted!r} matches {len(matches)} cell runs; give more of it")
    close = difflib.get_close_matches(wanted, ids, n=3, cutoff=0.6)
    hint = ("; did you mean " + " or ".join(repr(c) for c in close) + "?") if close else (
        f"; the store holds {len(ids)} cell runs (`harness ui` or `harness leaderboard SUITE` lists them)")
    raise UsageError(f"unknown run {wanted!r}{hint}")


def load_report(tracker: Any, run: Any) -> dict[str, Any] | None:
    """``diagnosis.json`` of the run; else the same built from its ``diag/*`` metrics; else ``None``."""
    from harness.cell.diagnosis_file import ARTIFACT

    try:
        return json.loads(tracker.read_artifact(run.info.run_id, ARTIFACT).decode("utf-8"))
    except Exception:  # no artifact (a run killed before its end, or older than the diagnosis)
        pass
    metrics = run.data.metrics
    if not any(k.startswith("diag/") for k in metrics):
        return None
    report: dict[str, Any] = {"unavailable": {}}
    for when in ("init", "final"):
        prefix = f"diag/{when}/"
        values = {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}
        report[when] = values or None
    history = tracker.metric_history(run.info.run_id, "diag/dead_codes")
    report["dead_codes"] = [[m.step, m.value] for m in sorted(history, key=lambda m: m.step)]
    return report


def causes_at_init(init: dict[str, Any], t: Thresholds = THRESHOLDS) -> list[str]:
    """What at step 0 points to a collapse from the start, in words (empty when nothing does)."""
    causes = []
    ratio = init.get("code_to_latent")
    if ratio is not None and ratio >= t.scale_ratio:
        causes.append(f"codes are {ratio:.0f}x longer than latents")
    elif ratio is not None and 0 < ratio <= 1 / t.scale_ratio:
        causes.append(f"codes are {1 / ratio:.0f}x shorter than latents")
    if init.get("latent_cosine", 0.0) >= t.aligned_cosine:
        causes.append(f"the latents point one way (mean cosine {init['latent_cosine']:.3f} to their mean)")
    return causes


def few_won(init: dict[str, Any], t: Thresholds = THRESHOLDS) -> bool:
    return init.get("codes_won_fraction", 1.0) < t.few_winners


def final_collapse(report: dict[str, Any] | None, metrics: dict[str, float], size: int,
                   eval_tokens: int | None = None) -> str:
    """The leaderboard's collapse rule on the eval split; without eval numbers, on the final batch."""
    if "utilization" in metrics or "perplexity" in metrics:
        return seed_collapse(metrics, size, eval_tokens)
    final = (report or {}).get("final") or {}
    fraction = final.get("codes_won_fraction")
    if fraction is not None and fraction < UTILIZATION_BELOW:
        return f"{fraction:.1%} of codes won on the diagnosis batch at the end"
    return ""


def verdict(report: dict[str, Any] | None, metrics: dict[str, float], size: int,
            t: Thresholds = THRESHOLDS, *, eval_tokens: int | None = None) -> str:
    """One plain sentence (or two) on what the diagnosis suggests."""
    collapsed = final_collapse(report, metrics, size, eval_tokens)
    init = (report or {}).get("init")
    if not collapsed:
        used = metrics.get("utilization")
        text = "no collapse" + (f": {used:.0%} of codes used over the eval split" if used is not None else "")
        if init and (few_won(init, t) or causes_at_init(init, t)):
            text += (f"; at step 0 {describe_start(init, t)}, and training recovered from that start "
                     "(the start did not decide the result)")
        return text + "."
    if report is None:
        return (f"collapsed ({collapsed}); this run recorded no diagnosis (made before the harness "
                "recorded one), so the cause is not known: re-run the cell to get one.")
    if not init:
        return f"collapsed ({collapsed}); step 0 was not measured in this run (resumed), so the cause is not known."
    if few_won(init, t):
        kind = "initialization scale" if init.get("code_to_latent") is not None and any(
            "than latents" in c for c in causes_at_init(init, t)) else "initialization"
        return (f"{describe_start(init, t)}: the other codes get little or no gradient and never catch "
                f"up (codebook collapse from {kind}; collapsed: {collapsed}). A codebook init matched to the "
                "latents' scale, or a tuned setting, may rescue it: this measures the regime, not the method "
                "alone.")
    dead = (report.get("dead_codes") or [])
    trend = f"; dead codes per log window went from {dead[0][1]:.0f} to {dead[-1][1]:.0f}" if len(dead) > 1 else ""
    return (f"{init.get('codes_won', 0):.0f} codes won at init, yet the run ended collapsed ({collapsed}){trend}: "
            "codes died during training, not from the initialization.")


def describe_start(init: dict[str, Any], t: Thresholds = THRESHOLDS) -> str:
    """``codes are 11x longer than latents and only 3 codes win at init`` (what applies)."""
    parts = causes_at_init(init, t)
    if few_won(init, t):
        parts.append(f"only {init.get('codes_won', 0):.0f} codes win at init")
    else:
        parts.append(f"{init.get('codes_won', 0):.0f} codes win at init")
    return " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)


ROWS = (("latent norm", "latent_norm", "{:.3g}"), ("code norm", "code_norm", "{:.3g}"),
        ("codes / latents (norm)", "code_to_latent", "{:.3g}x"),
        ("latent cosine to their mean", "latent_cosine", "{:.3f}"),
        ("codes won on the batch", "codes_won", "{:.0f}"), ("  as a fraction of K", "codes_won_fraction", "{:.1%}"))


def describe(run: Any, report: dict[str, Any] | None, metrics: dict[str, float]) -> str:
    """The measurements as a small table, dead codes over time, and the eval usage."""
    tags = run.data.tags
    lines = [f"run {run.info.run_id} ({run.info.status}): {tags.get('harness.suite', '?')} "
             f"{tags.get('harness.method', '?')} K={tags.get('harness.codebook_size', '?')} "
             f"dim={tags.get('harness.dim', '?')} seed {tags.get('harness.seed', '?')}"]
    if report is None:
        lines.append("no diagnosis recorded (a run made before the harness recorded one)")
    else:
        lines += measurements(report)
    usage = [f"{k} {metrics[k]:.3g}" for k in ("utilization", "perplexity", "dead_codes") if k in metrics]
    if usage:
        lines.append("eval split: " + ", ".join(usage))
    return "\n".join(lines)


def measurements(report: dict[str, Any]) -> list[str]:
    init, final = report.get("init") or {}, report.get("final") or {}
    head = f"{'':30}{'init (step ' + str(init.get('step', 0)) + ')':>16}{'end':>12}"
    lines = ["", head]
    unavailable = report.get("unavailable", {})
    for label, key, fmt in ROWS:
        cells = [fmt.format(d[key]) if key in d else ("unavailable" if key in unavailable else "–")
                 for d in (init, final)]
        lines.append(f"{label:30}{cells[0]:>16}{cells[1]:>12}")
    for key, why in sorted(unavailable.items()):
        lines.append(f"  {key}: {why}")
    if report.get("tokens"):
        lines.append(f"  (one fixed batch of {report['tokens']} tokens, model in eval mode)")
    dead = report.get("dead_codes") or []
    if dead:
        shown = dead if len(dead) <= 8 else [*dead[:4], None, *dead[-3:]]
        series = ", ".join("..." if p is None else f"{p[0]}: {p[1]:.0f}" for p in shown)
        lines.append(f"dead codes per log window (step: codes no training token chose): {series}")
    return lines
