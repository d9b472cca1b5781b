"""The objective phrases of the Gherkin steps, shared by the step definitions and by the hook that
reads a scenario's Then steps before it runs (so a drill knows every objective it is judged on,
and the evidence records them all, even when an earlier Then step fails)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from drills.base import Objectives

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
