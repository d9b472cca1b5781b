"""`firedrill calibrate`: outages and losses of known size against what the firedrill measures.

Exit codes as for `firedrill run`: 0 every calibration objective met, 1 one missed, 2 a firedrill error.
"""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path

import click

from firedrill.drills.calibration import CalibrationResult, error_stats, run_calibration
from firedrill.drills.calibration_trials import QUICK, CalibrationSettings, Kind
from firedrill.errors import ConfigError
from firedrill.evidence import EvidenceRecord
from firedrill.run_context import RunContext, default_out

_DURATION = re.compile(r"(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>ms|s)")


def parse_durations(text: str) -> tuple[float, ...]:
    """'200ms,1s,3s' -> (0.2, 1.0, 3.0). A unit is required, so 200 never silently means 200 s."""
    out: list[float] = []
    for part in (p.strip() for p in text.split(",")):
        m = _DURATION.fullmatch(part)
        if not m:
            raise ConfigError(f"bad duration {part!r}: use e.g. 200ms or 1.5s")
        value = float(m["amount"])
        out.append(value / 1000 if m["unit"] == "ms" else value)
    return tuple(out)


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError as exc:
        raise ConfigError(f"bad {what} {text!r}: use comma-separated integers") from exc


def _ms(value: float) -> str:
    return f"{value * 1000:+.1f}"


def print_result(result: CalibrationResult, record: EvidenceRecord, path: Path | None) -> None:
    s = result.settings
    click.echo(
        f"\nRTO error = measured - true, ms (probes {s.rate_hz:g} Hz, op timeout {s.op_timeout_s:g} s; "
        f"target |error| p95 <= {s.target_p95_s * 1000:g} ms)"
    )
    head = (
        f"{'kind':<16} {'dur':>6} {'n':>3} {'p50':>7} {'p95':>7} {'max':>7} {'min':>7} {'|p95|':>7} "
        f"{'new conn':>8}"
    )
    click.echo(head)
    for kind in result.kinds():
        for duration in (*s.durations_s, None):
            trials = [
                t
                for t in result.trials
                if t.kind is kind and t.error_s is not None and (duration is None or t.planned_s == duration)
            ]
            if not trials:
                continue
            st = error_stats([t.error_s for t in trials if t.error_s is not None])
            fresh = sum(1 for t in trials if t.reconnected)
            label = "all" if duration is None else f"{duration * 1000:g}ms"
            click.echo(
                f"{kind.value:<16} {label:>6} {st.n:>3} {_ms(st.p50_s):>7} {_ms(st.p95_s):>7} "
                f"{_ms(st.max_s):>7} {_ms(st.min_s):>7} {st.abs_p95_s * 1000:>7.1f} {fresh:>8}"
            )
        missed = result.unrecovered(kind)
        if missed:
            click.echo(f"{kind.value:<16} {missed} trial(s) saw no recovery")
    overall = result.stats()
    if overall is not None:
        click.echo(
            f"{'all kinds':<16} {'':>6} {overall.n:>3} {_ms(overall.p50_s):>7} {_ms(overall.p95_s):>7} "
            f"{_ms(overall.max_s):>7} {_ms(overall.min_s):>7} {overall.abs_p95_s * 1000:>7.1f}"
        )
    click.echo(
        "new conn: trials whose recovering write ran on a new connection (the probe gave up the held "
        "call at its deadline); its connect time is part of the error"
    )
    if result.losses:
        click.echo("\nknown loss: expected vs reported lost writes")
        for c in result.losses:
            status = "exact" if c.exact else "MISMATCH"
            click.echo(
                f"  {c.store:<9} N={c.writes:<4} expected {len(c.expected):>4}  "
                f"reported {len(c.reported):>4}  seqs {status}  ({c.acknowledged} acknowledged)"
            )
    for note in result.notes:
        click.echo(f"\nnote: {note}")
    click.echo(f"\n[{record.verdict.upper()}] calibration")
    if record.error:
        click.echo(f"  error: {record.error}")
    for v in record.verdicts:
        measured = (
            "not measured" if v.measured is None else f"{v.measured * (1000 if v.unit == 's' else 1):g}"
        )
        unit = "ms" if v.unit == "s" else v.unit
        limit = v.limit * (1000 if v.unit == "s" else 1)
        click.echo(f"  {'ok ' if v.met else 'NOT'} {v.objective:<36} {measured} {unit} (limit {limit:g})")
    if path is not None:
        report = path.parent / "report.html"
        click.echo(f"  evidence     {path}\n  report       {report if report.exists() else '(not rendered)'}")


@click.command("calibrate")
@click.option("--trials", type=int, default=None, help="Trials per kind and duration [default 3; quick 2].")
@click.option("--durations", default=None, help="Outage lengths, e.g. 200ms,1s,3s [quick: 200ms,500ms].")
@click.option("--rate", "rate_hz", type=float, default=100.0, show_default=True, help="Probe rate, Hz.")
@click.option(
    "--op-timeout",
    "op_timeout_s",
    type=float,
    default=0.5,
    show_default=True,
    help="Probe deadline per operation, s (the drills' default is 0.5).",
)
@click.option(
    "--kinds",
    default=",".join(k.value for k in Kind),
    show_default=True,
    help="Outage kinds to inject.",
)
@click.option("--loss", "loss", default=None, help="Known-loss sizes N, e.g. 1,5,20 [quick: 5]; 0 for none.")
@click.option("--quick", is_flag=True, help="A short run: 2 durations x 2 trials, one known loss.")
@click.option("--out", "out_root", type=click.Path(path_type=Path), help="Evidence/report directory.")
def calibrate(
    trials: int | None,
    durations: str | None,
    rate_hz: float,
    op_timeout_s: float,
    kinds: str,
    loss: str | None,
    quick: bool,
    out_root: Path | None,
) -> None:
    """Inject outages and losses of known size on the local staging and compare with the measurement."""
    base = QUICK if quick else CalibrationSettings()
    try:
        wanted = tuple(Kind(k.strip()) for k in kinds.split(",") if k.strip())
    except ValueError as exc:
        raise ConfigError(f"unknown kind in {kinds!r} (known: {', '.join(k.value for k in Kind)})") from exc
    losses = base.loss_writes if loss is None else tuple(n for n in parse_ints(loss, "--loss") if n > 0)
    settings = replace(
        base,
        trials=trials if trials is not None else base.trials,
        durations_s=parse_durations(durations) if durations else base.durations_s,
        rate_hz=rate_hz,
        op_timeout_s=op_timeout_s,
        kinds=wanted,
        loss_writes=losses,
        loss_stores=base.loss_stores if losses else (),
    )
    ctx = RunContext(environment="local", via="cli", out_root=(out_root or default_out()).resolve())
    done = run_calibration(settings, ctx, progress=click.echo)
    print_result(done.result, done.record, done.evidence_path)
    sys.exit({"passed": 0, "failed": 1}.get(done.record.verdict, 2))


COMMANDS = [calibrate]
