"""Test sets: paired (LR and HR folders matched by file stem) or LR-only, discovered from folders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fluxsr_core.benchmark.problems import (
    OnError,
    Problem,
    check_on_error,
    report_problem,
)
from fluxsr_core.imageio import IMAGE_SUFFIXES


@dataclass(frozen=True)
class TestItem:
    """One test image: its stem, LR file and (paired sets) HR file."""

    __test__ = False  # not a pytest class

    name: str
    lr: Path
    hr: Path | None = None


@dataclass
class TestSet:
    """Discovered items (sorted by name) and the problems met while matching files."""

    __test__ = False

    items: list[TestItem]
    lr_dir: Path
    hr_dir: Path | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def paired(self) -> bool:
        return self.hr_dir is not None


def images_by_stem(folder: str | Path, role: str, on_error: OnError = "raise",
                   problems: list[Problem] | None = None) -> dict[str, Path]:
    """Image files of a folder by stem (other files ignored); empty folders and ambiguous stems are problems."""
    problems = [] if problems is None else problems
    folder = Path(folder)
    if not folder.is_dir():
        report_problem(Problem(str(folder), f"{role} folder does not exist or is not a directory"), on_error, problems)
        return {}
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        report_problem(Problem(str(folder), f"empty {role} folder: no {'/'.join(sorted(IMAGE_SUFFIXES))} files"),
                       on_error, problems)
        return {}
    by_stem: dict[str, list[Path]] = {}
    for p in files:
        by_stem.setdefault(p.stem, []).append(p)
    out = {}
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            report_problem(Problem(str(paths[1]), f"ambiguous stem '{stem}' in {role} folder: {[p.name for p in paths]}",
                                   image=stem), on_error, problems)
        else:
            out[stem] = paths[0]
    return out


def discover_testset(lr_dir: str | Path, hr_dir: str | Path | None = None, *,
                     on_error: OnError = "raise") -> TestSet:
    """Paired (``hr_dir`` given: LR and HR matched by file stem) or LR-only test set."""
    check_on_error(on_error)
    problems: list[Problem] = []
    lr = images_by_stem(lr_dir, "LR", on_error, problems)
    if hr_dir is None:
        items = [TestItem(stem, path) for stem, path in sorted(lr.items())]
        return TestSet(items, Path(lr_dir), None, problems)
    hr = images_by_stem(hr_dir, "HR", on_error, problems)
    items = []
    for stem, path in sorted(lr.items()):
        if stem not in hr:
            report_problem(Problem(str(path), f"no HR partner: no image named '{stem}.*' in {hr_dir}", image=stem),
                           on_error, problems)
            continue
        items.append(TestItem(stem, path, hr[stem]))
    return TestSet(items, Path(lr_dir), Path(hr_dir), problems)
