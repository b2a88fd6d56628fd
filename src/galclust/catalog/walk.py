"""Find candidate image files below folders, loop-safe and without holding every path in memory.

:func:`list_folders` walks the tree once to list its folders (following folder symlinks, but
visiting each real folder once, so symlink loops end) and to count candidate files, which gives
progress bars their total. :func:`iter_files` then lists each folder again and yields file paths
one at a time.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from galclust.catalog.readers import IMAGE_SUFFIXES


@dataclass
class Tree:
    """The folders to read and what the first pass found in them."""

    folders: list[tuple[str, str]] = field(default_factory=list)  # (folder, its scan root)
    files: list[str] = field(default_factory=list)  # files given directly as roots
    candidates: int = 0  # files that iter_files will yield
    others: int = 0  # files skipped because their names are not images (or not --pattern)
    unreadable: list[str] = field(default_factory=list)  # folders that could not be listed


_NAME_SUFFIXES = (*IMAGE_SUFFIXES, ".fits.gz", ".fit.gz", ".fts.gz")  # as format_from_name


def _wanted(name: str, folder: str, root: str, patterns: Sequence[str]) -> bool:
    if not patterns:
        return name.lower().endswith(_NAME_SUFFIXES)
    for pattern in patterns:
        if "/" in pattern or os.sep in pattern:
            rel = os.path.relpath(os.path.join(folder, name), root)
            if fnmatch.fnmatch(rel, pattern):
                return True
        elif fnmatch.fnmatch(name, pattern):
            return True
    return False


def _list(folder: str) -> list[os.DirEntry[str]]:
    # unsorted: the catalog is sorted by path at the end, so listing order does not matter
    with os.scandir(folder) as entries:
        return list(entries)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def list_folders(roots: Sequence[str], patterns: Sequence[str] = ()) -> Tree:
    """Walk ``roots`` (folders or files) and return their folders and candidate-file counts."""
    tree = Tree()
    seen: set[tuple[int, int]] = set()
    for root in roots:
        root_path = os.path.abspath(root)
        if not os.path.isdir(root_path):
            tree.files.append(root_path)
            tree.candidates += 1
            continue
        stack = [root_path]
        while stack:
            folder = stack.pop()
            try:
                info = os.stat(folder)
                if (info.st_dev, info.st_ino) in seen:
                    continue
                seen.add((info.st_dev, info.st_ino))
                entries = _list(folder)
            except OSError as exc:
                tree.unreadable.append(f"{folder} ({exc.strerror})")
                continue
            tree.folders.append((folder, root_path))
            subfolders = []
            for entry in entries:
                if _is_dir(entry):
                    subfolders.append(entry.path)
                elif _wanted(entry.name, folder, root_path, patterns):
                    tree.candidates += 1
                else:
                    tree.others += 1
            stack.extend(subfolders)
    return tree


def iter_files(tree: Tree, patterns: Sequence[str] = ()) -> Iterator[str]:
    """Yield the path of every candidate file of ``tree``, folder by folder."""
    yield from tree.files
    for folder, root in tree.folders:
        try:
            entries = _list(folder)
        except OSError:
            continue  # vanished since the first pass
        for entry in entries:
            if not _is_dir(entry) and _wanted(entry.name, folder, root, patterns):
                yield entry.path
