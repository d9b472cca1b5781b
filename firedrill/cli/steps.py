"""`firedrill steps`: every step phrase a scenario can use, with its parameters and meaning, read
from the step registry itself (like behave's --steps-catalog)."""

from __future__ import annotations

import click

from firedrill.steps.registry import render_catalog, step_definitions


@click.command()
@click.argument("text", required=False)
def steps(text: str | None) -> None:
    """List the step library; with TEXT, only the steps whose phrase or meaning contains it."""
    definitions = step_definitions()
    if text:
        needle = text.lower()
        definitions = tuple(
            d for d in definitions if needle in d.phrase.lower() or needle in d.meaning.lower()
        )
    click.echo(render_catalog(definitions) if definitions else f"no step mentions '{text}'")


COMMANDS: list[click.Command] = [steps]
