"""The manifest a drill session writes for `firedrill run`: one JSON line per evidence file written
and per harness error, read back by the parent process for its summary."""

from __future__ import annotations

import json
from pathlib import Path


def append_manifest(manifest: Path, entry: dict[str, str]) -> None:
    with manifest.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def read_manifest(manifest: Path) -> list[dict[str, str]]:
    if not manifest.is_file():
        return []
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
