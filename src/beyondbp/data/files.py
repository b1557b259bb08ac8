"""Where data files are looked up, and downloading them where a network exists.

A data set called ``name`` is looked for, in this order, in ``--data-dir``,
``$BEYONDBP_DATA``, ``~/.cache/beyondbp`` and ``/usr/share/datasets`` (Debian's data
packages), each both as ``ROOT/name/`` and as ``ROOT/`` itself. Downloads go to the first
of ``--data-dir``, ``$BEYONDBP_DATA`` and ``~/.cache/beyondbp``, under ``name/``.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import DataNotFoundError

SYSTEM_DATA_DIR = Path("/usr/share/datasets")


def cache_dir() -> Path:
    return Path.home() / ".cache" / "beyondbp"


def user_roots(data_dir: Path | str | None) -> list[Path]:
    """``--data-dir`` and ``$BEYONDBP_DATA`` where set, then the cache."""
    return [Path(r) for r in (data_dir, os.environ.get("BEYONDBP_DATA")) if r] + [cache_dir()]


def search_dirs(name: str, data_dir: Path | str | None, subdirs: Sequence[str] = ("",)) -> list[Path]:
    """Directories to look in, in order: ``ROOT/name/SUB`` then ``ROOT/SUB`` for each root and subdir."""
    roots = user_roots(data_dir) + [SYSTEM_DATA_DIR]
    dirs: list[Path] = []
    for root in roots:
        for d in (base / sub for base in (root / name, root) for sub in subdirs):
            if d not in dirs:
                dirs.append(d)
    return dirs


def download_dir(name: str, data_dir: Path | str | None) -> Path:
    return user_roots(data_dir)[0] / name


def find_file(directory: Path, filename: str, gz_ok: bool) -> Path | None:
    for candidate in (filename, filename + ".gz") if gz_ok else (filename,):
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def locate(name: str, filenames: Sequence[str], data_dir: Path | str | None, hint: str,
           gz_ok: bool = False, subdirs: Sequence[str] = ("",)) -> dict[str, Path]:
    """The directory holding all of ``filenames`` (``.gz`` variants too if ``gz_ok``), or an error
    that says where we looked and how to get the files."""
    looked = search_dirs(name, data_dir, subdirs)
    for directory in looked:
        found = {f: find_file(directory, f, gz_ok) for f in filenames}
        if all(found.values()):
            return found
    raise DataNotFoundError(
        f"data set '{name}': files {', '.join(filenames)} not found in {', '.join(map(str, looked))}; {hint}"
    )


def folders(files: dict[str, Path]) -> str:
    """The folder(s) that ``files`` were found in, for saying where a run's data came from."""
    return ", ".join(sorted({str(path.parent) for path in files.values()}))


def locate_or_fetch(name: str, filenames: Sequence[str], data_dir: Path | str | None, hint: str,
                    download_files: bool, fetch: Callable[[Path], None], gz_ok: bool = False,
                    subdirs: Sequence[str] = ("",)) -> dict[str, Path]:
    """:func:`locate` the files; with ``download_files`` and the files missing, first call
    ``fetch(folder)`` to bring them into the download folder (see :func:`download_dir`)."""
    if download_files:
        try:
            return locate(name, filenames, data_dir, hint, gz_ok, subdirs)
        except DataNotFoundError:
            fetch(download_dir(name, data_dir))
    return locate(name, filenames, data_dir, hint, gz_ok, subdirs)


def download(urls: Sequence[str], destination: Path) -> None:
    """Fetch each URL into ``destination`` (skipping files already there), atomically."""
    destination.mkdir(parents=True, exist_ok=True)
    for url in urls:
        target = destination / url.rsplit("/", 1)[-1]
        if target.exists():
            continue
        partial = target.with_suffix(target.suffix + ".part")
        print(f"downloading {url} -> {target}")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise DataNotFoundError(f"could not download {url}: {error}") from None
        partial.replace(target)
