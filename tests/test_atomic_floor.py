"""One floor for atomic writes (``fluxsr_core.atomic``): no other product module renames files into place, and
what the floor promises holds — a write killed midway leaves the old file (or nothing), never half of the new one,
and a directory appears whole or not at all."""

import ast
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fluxsr_core import atomic
from fluxsr_core.errors import StorageFullError

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("fluxsr_core", "storage", "tasks", "flows", "bench", "deployments")
FLOOR = Path("fluxsr_core/atomic.py")
MOVES = {("os", "replace"), ("os", "rename"), ("os", "renames"), ("shutil", "move")}


def renames_in(tree: ast.AST) -> list[tuple[int, str]]:
    """Calls that move a file into place: ``os.replace / os.rename / os.renames / shutil.move`` (also imported by
    name), and ``x.replace(y)`` / ``x.rename(y)`` with one argument and no keywords — ``Path.replace`` and
    ``Path.rename``; ``str.replace`` takes two, ``datetime.replace`` keywords."""
    imported = {a.asname or a.name: (node.module, a.name) for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) for a in node.names}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (f.value.id, f.attr) in MOVES:
            found.append((node.lineno, f"{f.value.id}.{f.attr}"))
        elif isinstance(f, ast.Name) and imported.get(f.id) in MOVES:
            found.append((node.lineno, ".".join(imported[f.id])))
        elif (isinstance(f, ast.Attribute) and f.attr in ("replace", "rename") and len(node.args) == 1
              and not node.keywords and not isinstance(node.args[0], ast.Starred)):
            found.append((node.lineno, f"<path>.{f.attr}"))
    return found


def test_the_guard_sees_every_kind_of_rename():
    code = ("import os, shutil\nfrom os import replace as put\nfrom pathlib import Path\n"
            "os.replace(a, b)\nos.rename(a, b)\nshutil.move(a, b)\nput(a, b)\nPath(a).replace(b)\ntmp.rename(b)\n"
            "'x'.replace('a', 'b')\nwhen.replace(tzinfo=None)\n")
    assert [line for line, _ in renames_in(ast.parse(code))] == [4, 5, 6, 7, 8, 9]


def test_only_the_floor_renames_files_into_place():
    """Temp-and-rename lives in ``fluxsr_core/atomic.py`` alone (fsync, a full disk named, temps cleaned up):
    every other product module writes through it."""
    offenders = {}
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel != FLOOR and (found := renames_in(ast.parse(path.read_text()))):
                offenders[str(rel)] = found
    assert not offenders, offenders


# -- the floor itself -------------------------------------------------------------------------------------------

def _killed_while(tmp_path: Path, body: str) -> None:
    """Run ``body`` in a fresh process that SIGKILLs itself at ``die()``: a writer killed mid-write."""
    code = ("import os, signal, sys\nfrom pathlib import Path\nfrom fluxsr_core import atomic\n"
            "def die():\n    os.kill(os.getpid(), signal.SIGKILL)\n"
            f"d = Path(sys.argv[1])\n{body}\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_a_file_write_killed_midway_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "report.json"
    atomic.write_json(target, {"old": True})
    old = target.read_bytes()
    _killed_while(tmp_path, "with atomic.atomic_path(d / 'report.json') as tmp:\n"
                            "    tmp.write_bytes(b'{\"new\": tr')\n    die()")
    assert target.read_bytes() == old
    assert atomic.remove_stale_temps(tmp_path) and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_file_write_that_fails_leaves_nothing_and_names_a_full_disk(tmp_path):
    import errno

    with pytest.raises(RuntimeError):
        with atomic.atomic_path(tmp_path / "a.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StorageFullError, match=r"could not finish writing the report .* free space under .* kept"):
        with atomic.atomic_path(tmp_path / "a.bin", what="the report", kept="kept") as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_written_bytes_and_digests(tmp_path):
    atomic.write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "a.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    atomic.write_bytes(tmp_path / "sub" / "b.bin", b"xyz")  # the folder is made
    assert atomic.sha256_file(tmp_path / "sub" / "b.bin") == \
        "3608bca1e44ea6c4d268eb6db02260269892c0b42b86bbf1e77a6fa16c3c9282"
    assert atomic.sha256_json({"b": 1, "a": 2}) == atomic.sha256_json({"a": 2, "b": 1})


def test_a_directory_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "step-000002"
    _killed_while(tmp_path, "with atomic.atomic_dir(d / 'step-000002') as tmp:\n"
                            "    (tmp / 'weights').write_bytes(b'w')\n    die()")
    assert not final.exists() and (tmp_path / "step-000002.tmp").is_dir()  # the leftover a cleanup recognises
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(final) as tmp:
            (tmp / "weights").write_bytes(b"w")
            raise RuntimeError("failed midway")
    assert list(tmp_path.iterdir()) == []  # the failed attempt removed its temp (and the killed one's)
    with atomic.atomic_dir(final) as tmp:
        (tmp / "weights").write_bytes(b"w")
        (tmp / "state.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000002"]
    assert sorted(p.name for p in final.iterdir()) == ["state.json", "weights"]
    with atomic.atomic_dir(final) as tmp:  # a re-run replaces it whole: nothing of the old one stays
        (tmp / "other").write_bytes(b"o")
    assert sorted(p.name for p in final.iterdir()) == ["other"]


def test_stale_temps_are_removed_files_and_folders(tmp_path):
    (tmp_path / f"shard.tar{atomic.TMP_MARK}123").write_bytes(b"half")
    (tmp_path / f"store{atomic.TMP_MARK}9").mkdir()
    (tmp_path / "shard.tar").write_bytes(b"whole")
    assert sorted(p.name for p in atomic.remove_stale_temps(tmp_path)) == ["shard.tar.tmp-123", "store.tmp-9"]
    assert [p.name for p in tmp_path.iterdir()] == ["shard.tar"]
