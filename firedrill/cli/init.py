"""`firedrill init [DIR]`: a starter drills directory that runs as it is."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from firedrill.catalogue import catalogue
from firedrill.errors import ConfigError

STARTER_CONFIG = Path(__file__).resolve().parents[1] / "starter" / "firedrill.toml"


def write_starter(directory: Path) -> list[Path]:
    """firedrill.toml (the local profile, a commented AWS one) and one feature per scheduled
    drill. Refuses to overwrite anything."""
    files = {directory / "firedrill.toml": STARTER_CONFIG}
    for spec in catalogue().values():
        if spec.in_all:
            files[directory / spec.feature.name] = spec.feature
    existing = [p for p in files if p.exists()]
    if existing:
        raise ConfigError(f"{existing[0]} already exists: firedrill init never overwrites a file")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for dest, source in files.items():
            shutil.copyfile(source, dest)
    except OSError as exc:
        raise ConfigError(f"cannot write the starter drills to {directory}: {exc.strerror or exc}") from exc
    return list(files)


@click.command()
@click.argument("directory", type=click.Path(path_type=Path), default=".")
def init(directory: Path) -> None:
    """Write a starter drills directory: firedrill.toml and one feature per built-in drill."""
    for path in write_starter(directory):
        click.echo(f"wrote {path}")
    where = "" if directory == Path(".") else f"cd {directory} && "
    click.echo(f"\nnext: {where}firedrill run     (every .feature file there, on the local staging)")


COMMANDS: list[click.Command] = [init]
