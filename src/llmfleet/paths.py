"""Where the repository's non-Python parts live (templates under images/)."""

from __future__ import annotations

from pathlib import Path


def repo_root() -> Path:
    """The checkout this package runs from (the kit is installed editable from its repo)."""
    return Path(__file__).resolve().parents[2]


def images_dir() -> Path:
    found = repo_root() / "images"
    if not found.is_dir():
        raise FileNotFoundError(
            f"templates folder {found} is missing; install llmfleet editable from its repository"
        )
    return found
