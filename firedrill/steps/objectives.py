"""The objective phrases of the Gherkin steps, shared by the step definitions and by the hook that
reads a scenario's Then steps before it runs (so a drill knows every objective it is judged on,
and the evidence records them all, even when an earlier Then step fails)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from firedrill.drills.base import Objectives
from firedrill.drills.pitr import PitrObjectives
from firedrill.targets.restore_base import RefusalReason

_DURATION = r"(?P<amount>\d+(?:\.\d+)?) (?P<unit>seconds?|minutes?)"
RTO = re.compile(rf"writes succeed again(?P<same> on the same (?:primary|master))? within {_DURATION}")
RPO = re.compile(rf"at most {_DURATION} of acknowledged writes (?:are|is) lost")
NO_LOSS = re.compile(r"no acknowledged write is lost")


def seconds(amount: str, unit: str) -> float:
    value = float(amount)
    return value * 60 if unit.startswith("minute") else value


def objectives_from_steps(texts: Iterable[str], base: Objectives) -> Objectives:
    result = base
    for text in texts:
        if m := RTO.fullmatch(text):
            result = replace(result, rto_s=seconds(m["amount"], m["unit"]))
        elif m := RPO.fullmatch(text):
            result = replace(result, rpo_s=seconds(m["amount"], m["unit"]))
        elif NO_LOSS.fullmatch(text):
            result = replace(result, max_lost_writes=0)
    return result


# ---- point-in-time restore (features/pitr.feature) ------------------------------------------------
_AGE = r"(?P<amount>\d+(?:\.\d+)?) (?P<unit>seconds?|minutes?|hours?|days?)"
PITR_RTO = re.compile(rf"the restored database accepts writes within {_DURATION}")
PITR_RPO = re.compile(rf"at most {_DURATION} of data before the (?:mistake|disaster) (?:are|is) lost")
BACKUP_AGE = re.compile(rf"the newest base backup is at most {_AGE} old")
REFUSED = re.compile(
    r"the restore is refused because the target is (?P<why>before the backup|beyond the archived WAL)"
)
_AGE_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


def age_seconds(amount: str, unit: str) -> float:
    return float(amount) * _AGE_UNITS[unit.rstrip("s")]


def pitr_objectives_from_steps(texts: Iterable[str], base: PitrObjectives) -> PitrObjectives:
    result = base
    for text in texts:
        if m := PITR_RTO.fullmatch(text):
            result = replace(result, rto_s=seconds(m["amount"], m["unit"]))
        elif m := PITR_RPO.fullmatch(text):
            result = replace(result, rpo_s=seconds(m["amount"], m["unit"]))
        elif m := BACKUP_AGE.fullmatch(text):
            result = replace(result, backup_max_age_s=age_seconds(m["amount"], m["unit"]))
        elif m := REFUSED.fullmatch(text):
            why = (
                RefusalReason.BEFORE_BACKUP
                if m["why"] == "before the backup"
                else RefusalReason.BEYOND_ARCHIVE
            )
            result = replace(result, expect_refusal=why)
    return result
