"""Checks of the paths a command writes, made before any long work starts (``--out`` of ``train``
and ``reproduce``, ``--plot`` of ``bench``) and of the folders it reads (``--data-dir``).

Each raises :class:`~tropic.apps.cli.CommandError` naming the option, and leaves nothing behind: a
folder is tried by creating it (and its missing parents) and removing again what was created, a file
by opening it for appending (which changes nothing) and removing it if it was not there before.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import CommandError

__all__ = ["check_input_folder", "check_output_file", "check_output_folder", "make_folder"]

#: The chart formats of ``--plot`` (matplotlib writes each from the file name's suffix).
CHART_SUFFIXES = (".png", ".svg", ".pdf")


def check_input_folder(flag: str, folder: str | os.PathLike) -> Path:
    """A folder to read from: it must exist and be a folder."""
    folder = Path(folder)
    if not folder.exists():
        raise CommandError(f"{flag} {folder} does not exist")
    if not folder.is_dir():
        raise CommandError(f"{flag} {folder} is a file, not a folder: give the folder that holds the files")
    return folder


def check_output_folder(flag: str, folder: str | os.PathLike, *, hint: str, replace: bool = False) -> Path:
    """A folder to write results into: a new folder, or an empty one (any folder with ``replace``);
    never a file. ``hint`` ends the message about a non-empty folder (what to do instead)."""
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise CommandError(f"{flag} {folder} is a file, not a folder: choose another {flag}")
        if not replace and any(folder.iterdir()):
            raise CommandError(f"{flag} {folder} exists and is not empty: {hint}")
        _probe_file(flag, folder / ".tropic-write-test", shown=folder, what="write into it")
        return folder
    created = _make(flag, folder)
    for path in reversed(created):  # leave nothing behind: the command creates it when it writes
        path.rmdir()
    return folder


def make_folder(flag: str, folder: str | os.PathLike) -> list[Path]:
    """Create ``folder`` and its missing parents; return those created (outermost first)."""
    return _make(flag, Path(folder))


def check_output_file(
    flag: str, path: str | os.PathLike, *, suffixes: tuple[str, ...] = CHART_SUFFIXES
) -> Path:
    """A file to write at the end of a command: its name ends in one of ``suffixes``, it is not a
    folder, its folder exists, and it can be written there."""
    path = Path(path)
    if path.is_dir():
        raise CommandError(
            f"{flag} {path} is a folder: give a file name such as {path / ('bench' + suffixes[0])}"
        )
    if path.suffix.lower() not in suffixes:
        raise CommandError(f"{flag} {path}: give a file name ending in {', '.join(suffixes)}")
    parent = path.parent
    if not parent.exists():
        raise CommandError(f"{flag} {path}: the folder {parent} does not exist")
    if not parent.is_dir():
        raise CommandError(f"{flag} {path}: {parent} is a file, not a folder")
    _probe_file(flag, path, shown=path, what="write it")
    return path


def _make(flag: str, folder: Path) -> list[Path]:
    missing = []
    parent = folder
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise CommandError(f"{flag} {folder}: {parent} is a file, not a folder")
    created: list[Path] = []
    try:
        for path in reversed(missing):
            path.mkdir()
            created.append(path)
    except OSError as exc:
        for path in reversed(created):
            path.rmdir()
        raise CommandError(f"{flag} {folder}: cannot create it ({exc.strerror or exc})") from None
    return created


def _probe_file(flag: str, path: Path, *, shown: Path, what: str) -> None:
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise CommandError(f"{flag} {shown}: cannot {what} ({exc.strerror or exc})") from None
    if not existed:
        path.unlink()
