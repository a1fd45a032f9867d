"""Where a YOLO split's images and label files are: the files of an images folder (hidden ones
left out), darknet's list file of image paths, and the label file an image may have (the last
``images`` folder of its path as ``labels``, ultralytics' rule, or beside the image, darknet's;
its ``.txt`` suffix in any case). What :func:`yolov4.data.yolo_txt.load_yolo` reads.
"""

from __future__ import annotations

import os
from pathlib import Path

from yolov4.core.files import files_under, listed_path, posix_form, posix_note
from yolov4.data.problems import Problem, ProblemReport
from yolov4.errors import DatasetError, not_utf8

__all__ = [
    "LABEL_SUFFIX",
    "LabelFiles",
    "default_labels_dir",
    "label_files",
    "list_file",
    "listed_label_files",
    "listing",
    "missing_note",
]

LABEL_SUFFIX = ".txt"
# How many missing listed paths the note names.
MISSING_EXAMPLES = 3


def default_labels_dir(images: Path) -> Path:
    """The labels folder of ``images``: its last ``images`` folder as ``labels``, else the
    sibling ``labels`` folder."""
    parts = list(images.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    return images.parent / "labels"


def list_file(
    path: Path, report: ProblemReport, root: str | os.PathLike | None = None
) -> tuple[list[Path], list[str], list[str]]:
    """The image paths of darknet's list file (``train.txt``: one a line; relative ones from the
    list's folder, else from the working directory, where darknet reads them, else from
    ``root``: :func:`~yolov4.core.files.listed_path`), the lines naming no file (as looked
    up: written on Windows, with ``/``) and the note on lines written on Windows
    (:func:`~yolov4.core.files.posix_note`); a missing one is reported and left out
    (:func:`missing_note` says where it was looked for), one listed again reported and kept
    (what a split does with it: :attr:`DetectionData.repeats`)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{path}: cannot read the list of image paths: expected UTF-8 text, found {not_utf8(e)}"
        ) from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the list of image paths: {e}") from None
    files, missing, first_line = [], [], {}  # first_line: absolute path -> its first line
    written = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    for n, line in enumerate(lines, 1):
        entry = Path(line.strip())
        if not line.strip() or line.strip().startswith("#"):
            continue
        found = listed_path(entry, path, root)
        if found.is_file():
            earlier = first_line.setdefault(os.path.abspath(found), n)
            if earlier != n:
                report.add(
                    Problem.REPEATED_LISTING, str(path), f"line {n}: {entry} repeats line {earlier}"
                )
            files.append(found)
        else:
            report.add(Problem.MISSING_FILE, str(entry), f"listed in {path}")
            missing.append(str(Path(posix_form(str(entry)))))
    return files, missing, posix_note(str(path), written)


def missing_note(
    path: Path, missing: list[str], listed: int, root: str | os.PathLike | None = None
) -> str:
    """The note on the ``missing`` paths of list file ``path`` (of ``listed`` paths): where a
    relative one was looked for (``root``: the recorded folder, looked in last) and, when at least half are missing, the folder to run from
    (darknet reads them from its working directory), found by trying the list's parent folders."""
    shown = ", ".join(missing[:MISSING_EXAMPLES])
    more = (
        f", ... ({len(missing) - MISSING_EXAMPLES} more)" if len(missing) > MISSING_EXAMPLES else ""
    )
    text = f"{len(missing)} of {listed} image paths listed in {path} not found (e.g. {shown}{more})"
    relative = [e for e in missing if not Path(e).expanduser().is_absolute()]
    if relative:
        text += (
            f"; a relative path is looked for from the list's folder "
            f"{Path(path).parent.resolve()}, then from the working directory {Path.cwd()}"
            + (f", then from {Path(root).absolute()}" if root is not None else "")
        )
    if relative and 2 * len(missing) >= listed:
        root = next((d for d in Path(path).resolve().parents if (d / relative[0]).is_file()), None)
        text += (
            "; darknet reads them from the folder it runs in: run from the folder they are "
            "relative to" + (f" ({root}, where {relative[0]} is)" if root else "")
        )
    return text


def listed_label_files(path: Path, label_dir: Path | None) -> list[Path]:
    """Where the label file of a listed image may be: in ``label_dir`` by name when given, else
    where darknet and ultralytics look (the path's last ``images`` folder as ``labels``, then
    beside the image)."""
    name = path.with_suffix(LABEL_SUFFIX).name
    if label_dir is not None:
        return [label_dir / name]
    return [default_labels_dir(path.parent) / name, path.with_suffix(LABEL_SUFFIX)]


class LabelFiles:
    """Finds the first of an image's candidate label files, its suffix in any case (``a.TXT``
    for ``a.txt``: written where file names ignore case); each folder is listed once."""

    def __init__(self) -> None:
        self._folders: dict[Path, dict[str, Path]] = {}

    def find(self, candidates: list[Path]) -> Path | None:
        for candidate in candidates:
            if candidate.is_file():
                return candidate
            found = self._other_case(candidate.parent).get(candidate.name)
            if found is not None:
                return found
        return None

    def _other_case(self, folder: Path) -> dict[str, Path]:
        """``a.txt`` -> ``folder/a.TXT`` for the label files of ``folder`` whose suffix is
        ``.txt`` in another case."""
        if folder not in self._folders:
            try:
                names = os.listdir(folder)
            except OSError:
                names = []
            self._folders[folder] = {
                Path(n).stem + LABEL_SUFFIX: folder / n
                for n in names
                if Path(n).suffix.lower() == LABEL_SUFFIX
                and Path(n).suffix != LABEL_SUFFIX
                and (folder / n).is_file()
            }
        return self._folders[folder]


def listing(image_dir: Path) -> list[Path]:
    """Every file under ``image_dir``, hidden files and folders left out."""
    return [
        p
        for p in files_under(image_dir)
        if not any(part.startswith(".") for part in p.relative_to(image_dir).parts)
    ]


def label_files(path: Path, image_dir: Path, label_dir: Path, beside: bool) -> list[Path]:
    """Where the label file of image ``path`` may be: in ``label_dir``, else (``beside``) next
    to the image."""
    candidates = [(label_dir / path.relative_to(image_dir)).with_suffix(LABEL_SUFFIX)]
    if beside:
        candidates.append(path.with_suffix(LABEL_SUFFIX))
    return candidates
