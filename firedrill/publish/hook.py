"""What happens to a drill's evidence after it is written: ledger, signature, webhook, metrics.

`record_run` is called by `DrillRun.finish` right after `evidence.json` is written, in whatever process
ran the drill (`firedrill run`, `firedrill schedule`, `pytest features/`), so every path leaves the same
trail:

1. append the record to the evidence ledger (`firedrill.audit.ledger`: hash chain + HEAD), signed with Ed25519
   when a key is configured (`$FIREDRILL_SIGNING_KEY`, or `[ledger] signing_key_file`);
2. rewrite the run's `evidence.json` with the chained record, so the file next to the reports and the
   ledger's copy have the same SHA-256;
3. post the Slack-compatible webhook on a failed drill or a breached objective (`[notify]`);
4. rewrite the Prometheus textfile (`[metrics]`) from the whole ledger, so every drill keeps its gauges.

None of these may lose the evidence: each failure is logged as one line and the next step still runs.
The evidence file written before the hook stays valid whatever happens here (every rewrite is atomic).
A record that could not be chained can be appended later with `firedrill ledger append <evidence.json>`.

Where the ledger lives: `[ledger] dir` if configured; otherwise `reports/ledger/` for runs writing to
the default `reports/out/`, and `<out>/ledger/` for runs writing elsewhere (tests, `--out`), so a
throw-away run never lands in the audit ledger.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from firedrill.audit.ledger import LedgerEntry, append, iter_records, read_head
from firedrill.audit.signing import Signer
from firedrill.config import LedgerSettings, Settings, active_config_path, load_settings
from firedrill.errors import GuardrailError, HarnessError
from firedrill.evidence import EvidenceRecord, load_evidence, write_evidence
from firedrill.publish.metrics import write_metrics
from firedrill.publish.notify import NotifyConfig, notify
from firedrill.run_context import default_ledger, default_out

log = logging.getLogger("firedrill.ledger")


@dataclass
class HookOutcome:
    """What `run_hook` did; `problems` holds the one-line reason of every step that failed."""

    record: EvidenceRecord  # the chained record when the append worked, else the one passed in
    ledger_dir: Path | None = None
    seq: int | None = None
    signed_by: str | None = None  # key fingerprint
    notified: bool = False
    metrics_path: Path | None = None
    problems: list[str] = field(default_factory=list)


def ledger_dir_for(settings: LedgerSettings, out_root: Path | None) -> Path:
    """The ledger a run writing evidence under `out_root` appends to (see the module docstring)."""
    if settings.dir is not None:
        return settings.dir
    if out_root is None or _same_path(out_root, default_out()):
        return default_ledger()
    return out_root / "ledger"


def load_signer(settings: LedgerSettings) -> Signer | None:
    """The configured Ed25519 signer (`firedrill.audit.signing.Signer`), or None when no key is configured.

    The environment variable wins over the key file. Raises ConfigError (naming the variable or the
    file, never the key) when a configured key is unusable.
    """
    if os.environ.get(settings.signing_key_env, "").strip():
        return Signer.from_env(settings.signing_key_env)
    if settings.signing_key_file is not None:
        return Signer.from_file(settings.signing_key_file)
    return None


def record_run(record: EvidenceRecord, evidence_path: Path) -> EvidenceRecord:
    """The hook for `DrillRun.finish`: never raises; returns the record as it now stands on disk."""
    try:
        return run_hook(record, evidence_path).record
    except Exception as exc:  # a bug here must not cost the drill its evidence
        log.error("after-run hook failed for %s: %s", record.run_id, _one_line(exc))
        return record


def run_hook(record: EvidenceRecord, evidence_path: Path, settings: Settings | None = None) -> HookOutcome:
    """Ledger, evidence rewrite, webhook and metrics for one run; each failure logged as one line."""
    outcome = HookOutcome(record=record)
    if settings is None:
        try:
            settings = load_settings(active_config_path())
        except Exception as exc:
            _problem(outcome, f"configuration unusable, evidence not chained or notified: {_one_line(exc)}")
            return outcome
    out_root = evidence_path.parent.parent

    if settings.ledger.enabled:
        ledger_dir = ledger_dir_for(settings.ledger, out_root)
        outcome.ledger_dir = ledger_dir
        chained = _append(outcome, record, ledger_dir, settings.ledger, evidence_path)
        if chained is not None:
            outcome.record = chained
            try:
                write_evidence(chained, evidence_path.parent)
            except Exception as exc:
                _problem(
                    outcome,
                    f"record {outcome.seq} is in the ledger but {evidence_path} could not be rewritten "
                    f"with its chain link: {_one_line(exc)}",
                )

    if settings.notify is not None:
        _notify(outcome, settings, evidence_path.parent / "report.html")
    if settings.metrics is not None:
        _metrics(outcome, settings)
    return outcome


def chain_evidence(evidence_path: Path, settings: Settings) -> HookOutcome:
    """`firedrill ledger append`: chain an existing evidence.json (one the hook could not append).

    Unlike `run_hook`, failures raise: the user asked for exactly this.
    """
    record = load_evidence(evidence_path)
    ledger_dir = ledger_dir_for(settings.ledger, evidence_path.parent.parent)
    signer = load_signer(settings.ledger)
    entry = append_checked(ledger_dir, record, signer)
    write_evidence(entry.record, evidence_path.parent)
    fp = signer.fingerprint() if signer is not None else None
    return HookOutcome(record=entry.record, ledger_dir=ledger_dir, seq=entry.seq, signed_by=fp)


def append_checked(ledger_dir: Path, record: EvidenceRecord, signer: Signer | None) -> LedgerEntry:
    """`ledger.append`, refusing to start signing in the middle of an unsigned ledger.

    `verify` with the public key checks every record from the first, so signed records after
    unsigned ones would make the ledger fail verification for good (GuardrailError instead).
    """
    if signer is not None and ledger_dir.is_dir():
        head = read_head(ledger_dir)
        if head is not None and head.key_fingerprint is None:
            raise GuardrailError(
                f"ledger {ledger_dir} holds {head.seq} unsigned record(s): signed records after them "
                "could never verify with the key; configure a new [ledger] dir for signed evidence, "
                "or unset the key"
            )
    return append(ledger_dir, record, signer)


# ---------------------------------------------------------------------------------------------- steps


def _append(
    outcome: HookOutcome,
    record: EvidenceRecord,
    ledger_dir: Path,
    settings: LedgerSettings,
    evidence_path: Path,
) -> EvidenceRecord | None:
    try:
        signer = load_signer(settings)
    except Exception as exc:
        _problem(
            outcome,
            f"{record.run_id} NOT appended to the ledger {ledger_dir}: signing key unusable: "
            f"{_one_line(exc)} (fix it, then: firedrill ledger append {evidence_path})",
        )
        return None
    try:
        entry = append_checked(ledger_dir, record, signer)
    except Exception as exc:
        _problem(
            outcome,
            f"{record.run_id} NOT appended to the ledger {ledger_dir}: {_one_line(exc)} "
            f"(evidence kept in {evidence_path}; append later with: firedrill ledger append {evidence_path})",
        )
        return None
    outcome.seq = entry.seq
    outcome.signed_by = signer.fingerprint() if signer is not None else None
    log.info(
        "ledger: %s appended to %s as record %d (%s)",
        record.run_id,
        ledger_dir,
        entry.seq,
        f"signed, key {outcome.signed_by}" if outcome.signed_by else "unsigned",
    )
    return entry.record


def _notify(outcome: HookOutcome, settings: Settings, report_path: Path) -> None:
    assert settings.notify is not None
    conf = settings.notify
    secret_values = [os.environ[name] for name in conf.secret_envs if os.environ.get(name)]
    try:
        config = NotifyConfig.from_mapping(
            {
                "webhook_url_env": conf.webhook_url_env,
                "timeout_s": conf.timeout_s,
                "notify_on": conf.notify_on,
                "secrets": secret_values,
            }
        )
        outcome.notified = notify(outcome.record, config, report_path)
    except Exception as exc:  # messages from notify name the host only, never the URL
        _problem(outcome, f"webhook for {outcome.record.run_id} not sent: {_one_line(exc)}")
        return
    if outcome.notified:
        log.info("notify: webhook sent for %s (%s)", outcome.record.run_id, outcome.record.verdict)


def _metrics(outcome: HookOutcome, settings: Settings) -> None:
    assert settings.metrics is not None
    records: list[EvidenceRecord] = []
    if outcome.ledger_dir is not None and outcome.ledger_dir.is_dir():
        try:
            records = list(iter_records(outcome.ledger_dir))
        except Exception as exc:
            _problem(outcome, f"metrics: ledger unreadable, only this run is exported: {_one_line(exc)}")
            records = []
    if all(r.run_id != outcome.record.run_id for r in records):
        records.append(outcome.record)
    try:
        outcome.metrics_path = write_metrics(settings.metrics.textfile, records)
    except Exception as exc:
        _problem(outcome, f"metrics file {settings.metrics.textfile} not updated: {_one_line(exc)}")


def _problem(outcome: HookOutcome, message: str) -> None:
    outcome.problems.append(message)
    log.error("%s", message)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(exc, HarnessError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b
