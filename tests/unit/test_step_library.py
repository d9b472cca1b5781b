"""The drill catalogue, the step library and feature selection, without any server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pytest_bdd import parsers

from firedrill.catalogue import CATEGORIES, catalogue, drill_for_feature, get_drill
from firedrill.errors import ConfigError
from firedrill.runner import available_drills, check_selection, select
from firedrill.steps.registry import check_feature, describe_parser, render_catalog, step_definitions

BUILTIN = ("failover", "pitr", "cache-failover", "calibration")


def test_the_catalogue_holds_every_builtin_drill_with_its_feature_and_steps() -> None:
    specs = catalogue()
    assert set(BUILTIN) <= set(specs)
    for spec in specs.values():
        assert spec.feature.is_file(), spec.feature
        assert spec.category in CATEGORIES
        assert spec.steps and spec.summary and spec.local_plan.starts
    assert get_drill("pitr").category == "restore"
    assert "calibration" not in available_drills()  # run by `firedrill calibrate`, not by `all`


def test_unknown_drill_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown drill 'nope' \(known: .*failover.*all\)"):
        get_drill("nope")


def test_a_copy_of_a_builtin_feature_belongs_to_its_drill(tmp_path: Path) -> None:
    copy = tmp_path / "failover.feature"
    copy.write_text(get_drill("failover").feature.read_text())
    spec = drill_for_feature(copy)
    assert spec is not None and spec.name == "failover"
    assert drill_for_feature(tmp_path / "my_own.feature") is None


def test_every_builtin_step_has_a_definition() -> None:
    for spec in catalogue().values():
        assert check_feature(spec.feature) == [], spec.name


def test_every_step_says_what_it_does() -> None:
    definitions = step_definitions()
    assert len(definitions) > 30
    missing = [f"{d.keyword} {d.phrase} ({d.module})" for d in definitions if not d.meaning]
    assert not missing, "steps without a one-line meaning (docstring): " + "; ".join(missing)


def test_the_catalog_lists_every_definition_with_its_parameters() -> None:
    definitions = step_definitions()
    text = render_catalog(definitions)
    for d in definitions:
        assert f"{d.keyword} {d.phrase}" in text
    assert "Given canary writes at {rate} per second" in text
    assert "    - rate: a number" in text


def test_regex_steps_read_as_phrases() -> None:
    phrase, params = describe_parser(
        parsers.re(
            r"writes succeed again(?P<same> on the same (?:primary|master))?"
            r" within (?P<n>\d+) (?P<u>seconds?)"
        )
    )
    assert phrase == "writes succeed again[{same}] within {n} {u}"
    assert params == ("same:  on the same primary or master (optional)", "n: a number", "u: second(s)")


def test_a_step_typo_is_named_by_file_and_line(tmp_path: Path) -> None:
    feature = tmp_path / "typo.feature"
    feature.write_text(
        "Feature: mine\n\n  Scenario: one\n"
        "    Given a PostgreSQL primary with a streaming standby in the drill environment\n"
        "    When the primary is kiled\n    Then no acknowledged write is lost\n"
    )
    (problem,) = check_feature(feature)
    assert problem.startswith(f'{feature}:5: no step matches "When the primary is kiled"')
    with pytest.raises(ConfigError, match=r"typo.feature:5: no step matches"):
        check_selection(select([str(feature)], tmp_path))


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("not gherkin at all\nFeature: x\n", 1),
        ("Feature: x\n  Scenario: y\n    And a\n", 3),
        ("Feature: x\n  Scenario Outline: z\n    Given <q>\n    Examples:\n    | q |\n    | 1 | 2 |\n", 6),
    ],
)
def test_a_broken_feature_file_is_one_line_with_its_location(tmp_path: Path, body: str, line: int) -> None:
    feature = tmp_path / "broken.feature"
    feature.write_text(body)
    with pytest.raises(ConfigError) as info:
        check_feature(feature)
    assert str(info.value).startswith(f"{feature}:{line}: ")
    assert "\n" not in str(info.value)


def test_selection_takes_names_all_files_and_directories(tmp_path: Path) -> None:
    assert select(["all"], tmp_path).features == tuple(get_drill(n).feature for n in available_drills())
    assert select(["pitr"], tmp_path).features == (get_drill("pitr").feature,)
    (tmp_path / "drills" / "reports").mkdir(parents=True)
    mine = tmp_path / "drills" / "mine.feature"
    mine.write_text("Feature: m\n")
    (tmp_path / "drills" / "reports" / "old.feature").write_text("Feature: output, not a drill\n")
    assert select(["drills"], tmp_path).features == (mine.resolve(),)
    assert select(["drills/mine.feature"], tmp_path).features == (mine.resolve(),)
    # no target: the features under the working directory, else every drill
    assert select([], tmp_path / "drills").features == (mine.resolve(),)
    assert select([], tmp_path / "drills" / "reports" / "..").features == (mine.resolve(),)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert select([], empty).features == select(["all"], empty).features
    with pytest.raises(ConfigError, match=re.escape("feature file not found: nope.feature")):
        select(["nope.feature"], tmp_path)
    with pytest.raises(ConfigError, match=re.escape("no .feature file under empty")):
        select(["empty"], tmp_path)
