"""The step library as data: every step phrase, its parameters and its meaning, read from
pytest-bdd's own step registry (so `firedrill steps` cannot drift from the code), and the check of
a feature file against it (so a typo in a step is one line naming the file and line, before any
staging starts).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pytest_bdd.exceptions import GherkinParseError
from pytest_bdd.parser import Feature, FeatureParser, Step
from pytest_bdd.parsers import StepParser
from pytest_bdd.steps import step_function_context_registry

from firedrill.catalogue import step_modules
from firedrill.errors import ConfigError, first_line

COMMON_STEPS = "firedrill.steps.common"


@dataclass(frozen=True, slots=True)
class StepDefinition:
    keyword: str  # "Given", "When", "Then" (or "Step" for any)
    phrase: str  # the step as a feature writes it, with {parameters}
    params: tuple[str, ...]  # "name: what it takes"
    meaning: str  # the first paragraph of the step function's docstring
    module: str
    parser: StepParser

    def matches(self, step: Step) -> bool:
        return self.keyword in ("Step", step.type.capitalize()) and self.parser.is_matching(step.name)


def library_modules() -> list[str]:
    return [COMMON_STEPS, *step_modules()]


@cache
def step_definitions() -> tuple[StepDefinition, ...]:
    modules = library_modules()
    for name in modules:  # importing a step module registers its steps with pytest-bdd
        importlib.import_module(name)
    found: list[StepDefinition] = []
    for context in list(step_function_context_registry.values()):
        module = context.step_func.__module__
        if module not in modules:
            continue
        phrase, params = describe_parser(context.parser)
        doc = (context.step_func.__doc__ or "").strip()
        found.append(
            StepDefinition(
                keyword=(context.type or "step").capitalize(),
                phrase=phrase,
                params=params,
                meaning=" ".join(doc.split("\n\n")[0].split()),
                module=module,
                parser=context.parser,
            )
        )
    order = {"Given": 0, "When": 1, "Then": 2, "Step": 3}
    return tuple(sorted(found, key=lambda d: (order[d.keyword], modules.index(d.module), d.phrase)))


# ---- phrases of regex and parse steps, for people ------------------------------------------------
_PARSE_FIELD = re.compile(r"\{(?P<name>\w+)(?::(?P<fmt>[^}]*))?\}")
_PLURAL = re.compile(r"(\w)s\?")
_FORMATS = {"g": "a number", "d": "a whole number", "f": "a number", "": "text", "w": "a word"}


def describe_parser(parser: StepParser) -> tuple[str, tuple[str, ...]]:
    regex = getattr(parser, "regex", None)
    if isinstance(regex, re.Pattern):
        return _describe_regex(regex.pattern)
    text = str(parser.name)
    params = tuple(
        f"{m['name']}: {_FORMATS.get(m['fmt'] or '', m['fmt'])}" for m in _PARSE_FIELD.finditer(text)
    )
    return _PARSE_FIELD.sub(lambda m: "{" + m["name"] + "}", text), params


def _describe_regex(pattern: str) -> tuple[str, tuple[str, ...]]:
    """'at most (?P<amount>\\d+) (?P<unit>seconds?|minutes?) ...' -> 'at most {amount} {unit} ...',
    with each parameter's alternatives spelled out; optional words shown in [brackets]."""
    params: list[str] = []
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "(":
            end = _closing(pattern, i)
            inner = pattern[i + 1 : end]
            optional = end + 1 < len(pattern) and pattern[end + 1] == "?"
            if inner.startswith("?P<"):
                name, body = inner[3:].split(">", 1)
                text = "{" + name + "}"
                params.append(f"{name}: {_plain(body)}" + (" (optional)" if optional else ""))
            else:
                body = inner[2:] if inner.startswith("?:") else inner
                text = _describe_regex(body)[0]
            out.append(f"[{text}]" if optional else text)
            i = end + (2 if optional else 1)
            continue
        if ch == "\\" and i + 1 < len(pattern):
            out.append(pattern[i + 1])
            i += 2
            continue
        out.append(ch)
        i += 1
    # "seconds?" reads "second(s)"; "are|is" reads "are/is"
    return _PLURAL.sub(r"\1(s)", "".join(out)).replace("|", "/"), tuple(params)


def _closing(pattern: str, start: int) -> int:
    depth = 0
    i = start
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
            continue
        depth += {"(": 1, ")": -1}.get(pattern[i], 0)
        if depth == 0:
            return i
        i += 1
    raise ValueError(f"unbalanced group in step pattern {pattern!r}")


def _plain(body: str) -> str:
    if body in (r"\d+", r"\d+(?:\.\d+)?", r"[\d.]+"):
        return "a number"
    text = _describe_regex(body)[0]
    return text.replace("/", " or ")


# ---- features against the library ------------------------------------------------------------------
def parse_feature(path: Path) -> Feature:
    try:
        return FeatureParser(str(path.parent), path.name).parse()
    except GherkinParseError as exc:
        raise ConfigError(f"{path}:{exc.line}: {' '.join(exc.message.split())}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except Exception as exc:  # the Gherkin parser's own errors carry the line in their text
        raise ConfigError(f"{path}: not a valid feature file: {first_line(exc)}") from exc


def feature_tags(path: Path) -> set[str]:
    """Every tag of a feature (feature, rules, scenarios, examples), for marker registration; an
    unparsable file has none here (its collection reports the error)."""
    try:
        feature = parse_feature(path)
    except ConfigError:
        return set()
    tags = set(feature.tags)
    for scenario in feature.scenarios.values():
        tags |= scenario.tags | (scenario.rule.tags if scenario.rule else set())
        for examples in scenario.examples:
            tags |= examples.tags or set()
    return tags


def _concrete_steps(feature: Feature) -> Iterable[tuple[str, Step]]:
    for scenario in feature.scenarios.values():
        contexts = [c for ex in scenario.examples for c in ex.as_contexts()]
        rendered = scenario.render(contexts[0] if contexts else {})
        for step in rendered.steps:
            yield scenario.name, step


def check_feature(path: Path) -> list[str]:
    """One line per step no definition matches: 'file:line: no step matches "When ..."'."""
    feature = parse_feature(path)
    if not feature.scenarios:
        return [f"{path}: no scenario in this feature file"]
    definitions = step_definitions()
    problems = []
    for _, step in _concrete_steps(feature):
        if not any(d.matches(step) for d in definitions):
            problems.append(
                f'{path}:{step.line_number}: no step matches "{step.type.capitalize()} {step.name}" '
                "(`firedrill steps` lists them)"
            )
    return problems


def render_catalog(definitions: Iterable[StepDefinition]) -> str:
    lines: list[str] = []
    for d in definitions:
        lines.append(f"{d.keyword} {d.phrase}")
        if d.meaning:
            lines.append(f"    {d.meaning}")
        for p in d.params:
            lines.append(f"    - {p}")
    return "\n".join(lines)
