"""The compliance catalogue: the controls firedrill's evidence is mapped to, in one place.

For each control, what it asks (the period report's "Requirement" column) and how one drill record
evidences it (the `how` of the `ControlRef`s every evidence record carries). The drill base writes
`compliance_refs()` into each record; the period report assesses every control of `CONTROLS` over a
period, in this order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from firedrill.evidence import ControlRef


@dataclass(frozen=True, slots=True)
class Control:
    framework: str  # "ISO/IEC 27001:2022"
    control: str  # "A.5.30"
    requirement: str  # what the control asks
    evidenced_by: str  # how one drill record evidences it

    @property
    def key(self) -> tuple[str, str]:
        return (self.framework, self.control)

    def ref(self) -> ControlRef:
        """The control as a drill record states it."""
        return ControlRef(framework=self.framework, control=self.control, how=self.evidenced_by)


SOC2_A1_3 = Control(
    framework="SOC 2",
    control="A1.3",
    requirement="Recovery plan procedures supporting system recovery are tested.",
    evidenced_by="Recovery plan procedures are tested; this record is the test and its result.",
)
ISO27001_A5_30 = Control(
    framework="ISO/IEC 27001:2022",
    control="A.5.30",
    requirement="ICT readiness for business continuity is planned, implemented, maintained and tested.",
    evidenced_by="ICT readiness for business continuity: recovery objectives exercised and measured.",
)
ISO27001_A8_13 = Control(
    framework="ISO/IEC 27001:2022",
    control="A.8.13",
    requirement="Backup copies of information are maintained and regularly tested.",
    evidenced_by="Backups and replicas are shown to restore service with the data checks listed.",
)
PCI_DSS_12_10_2 = Control(
    framework="PCI DSS 4.0",
    control="12.10.2",
    requirement="At least once every 12 months the incident response plan, including business recovery "
    "and continuity procedures, is reviewed, updated as needed and tested.",
    evidenced_by="Incident response (recovery) procedures tested at least annually; findings recorded.",
)
HIPAA_164_308_A7_II_D = Control(
    framework="HIPAA",
    control="164.308(a)(7)(ii)(D)",
    requirement="Procedures for periodic testing and revision of contingency plans (addressable).",
    evidenced_by="Testing and revision procedures for the contingency plan.",
)

CONTROLS: tuple[Control, ...] = (
    SOC2_A1_3,
    ISO27001_A5_30,
    ISO27001_A8_13,
    PCI_DSS_12_10_2,
    HIPAA_164_308_A7_II_D,
)


def compliance_refs() -> tuple[ControlRef, ...]:
    """Every control as the `compliance` of a drill record states it."""
    return tuple(c.ref() for c in CONTROLS)


def in_words(controls: Sequence[Control] = CONTROLS) -> str:
    """'SOC 2 A1.3, ISO/IEC 27001:2022 A.5.30 and A.8.13, PCI DSS 4.0 12.10.2 and HIPAA ...'."""
    by_framework: dict[str, list[str]] = {}
    for c in controls:
        by_framework.setdefault(c.framework, []).append(c.control)
    parts = [f"{framework} {' and '.join(ids)}" for framework, ids in by_framework.items()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
