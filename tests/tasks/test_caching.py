"""Cache keys follow the code: the import graph of each stage, on real files, in a real copy of the checkout.

Edits are made to copies of the project packages, and the code versions are printed by a
``python -I`` child process that imports each copy's ``tasks.caching`` (checked through
``__file__``): nothing here mocks ``code_version``. It only reads source files, so the
child imports Prefect (for ``tasks.caching``) but never torch nor the modules it hashes.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import REPO

from tasks.caching import (
    LOCATION_ARGS,
    PROJECT_PACKAGES,
    StagePolicy,
    module_file,
    project_imports,
)

# stage -> (module holding the constants, the constants whose modules make the stage's code version), as the
# flows use them: flows/<stage>.py pass the task module's CODE_MODULES; flows/benchmark.py keys model rows on
# CODE_MODULES + MODEL_MODULES and the synthetic test set on SYNTH_MODULES.
STAGES = {
    "pairs": ("tasks.pairs", ("CODE_MODULES",)),
    "lr": ("tasks.degrade", ("CODE_MODULES",)),
    "latents": ("tasks.encode", ("CODE_MODULES",)),
    "train": ("tasks.train", ("CODE_MODULES",)),
    "bench": ("tasks.benchmark", ("CODE_MODULES",)),
    "bench-models": ("tasks.benchmark", ("CODE_MODULES", "MODEL_MODULES")),
    "testsets": ("tasks.benchmark", ("SYNTH_MODULES",)),
}
PIPELINE = ("pairs", "lr", "latents", "train")
BENCH = ("bench", "bench-models", "testsets")

# Runs in one child process (``python -I``: no PYTHONPATH, no cwd on sys.path) for a list of copies,
# importing each copy's tasks.caching afresh (project modules purged, the copy first on sys.path): so the
# (slow) Prefect import is paid once. argv: STAGES as JSON, then [[name, root, [extra modules]], ...] as JSON.
PROBE = textwrap.dedent('''
    import ast, importlib, json, sys
    stages, runs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    project = tuple(json.loads(sys.argv[3]))
    results = {}
    sys.path.insert(0, "")
    for name, root, extra in runs:
        for m in [m for m in sys.modules if m.partition(".")[0] in project]:
            del sys.modules[m]
        sys.path[0] = root
        importlib.invalidate_caches()
        import tasks.caching as c

        def constants(module):
            tree = ast.parse(c.module_file(module).read_text())
            return {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name) and t.id.endswith("_MODULES")}

        modules = {s: [m for n in names for m in constants(mod)[n]] for s, (mod, names) in stages.items()}
        loaded = set(sys.modules)
        results[name] = {
            "caching_file": c.__file__,
            "latents_file": str(c.module_file("fluxsr_core.latents")),
            "versions": {s: c.code_version(*mods) for s, mods in modules.items()},
            "closures": {s: sorted({m for n in mods for m in c.project_imports(n)}) for s, mods in modules.items()},
            "extra": {n: list(c.project_imports(n)) for n in extra},
        }
        # what hashing imported: nothing (it reads files); and torch never came in
        results[name]["imported"] = sorted(set(sys.modules) - loaded) + (["torch"] if "torch" in sys.modules else [])
    print(json.dumps(results))
''')


def _copy_checkout(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for pkg in PROJECT_PACKAGES:
        shutil.copytree(REPO / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _probe(runs: list[tuple[str, Path, tuple[str, ...]]]) -> dict[str, dict]:
    arg = json.dumps([[name, str(root), list(extra)] for name, root, extra in runs])
    r = subprocess.run([sys.executable, "-I", "-c", PROBE, json.dumps(STAGES), arg, json.dumps(PROJECT_PACKAGES)],
                       check=False, capture_output=True, text=True, timeout=120, cwd=runs[0][1])
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    for name, root, _ in runs:  # each copy, not the installed checkout, is what was imported and hashed
        assert Path(out[name]["caching_file"]) == root / "tasks" / "caching.py"
        assert Path(out[name]["latents_file"]) == root / "fluxsr_core" / "latents.py"
    return out


def _append(path: str, text: str = "\n# touched by test_caching\n"):
    def edit(root: Path) -> None:
        f = root / path
        f.parent.mkdir(parents=True, exist_ok=True)
        with f.open("a") as fh:
            fh.write(text)
    return edit


# name -> (edit of a copy, extra modules whose closure the probe prints)
EDITS = {
    "fluxsr_core/latents.py": (_append("fluxsr_core/latents.py"), ()),
    "fluxsr_core/degrade/kernels.py": (_append("fluxsr_core/degrade/kernels.py"), ()),
    "tasks/degrade.py": (_append("tasks/degrade.py"), ()),
    "fluxsr_core/colorfix.py": (_append("fluxsr_core/colorfix.py"), ()),
    "fluxsr_core/train/loop.py": (_append("fluxsr_core/train/loop.py"), ()),
    "tasks/train_worker.py": (_append("tasks/train_worker.py"), ()),
    "storage/latent_dataset.py": (_append("storage/latent_dataset.py"), ()),
    "unrelated": (lambda root: [_append(p)(root) for p in ("flows/cli_stages.py", "deployments/setup.py",
                                                           "fluxsr_core/upscale_files.py",
                                                           "fluxsr_core/models/zz_nobody_imports.py")], ()),
    # a lazy import added inside a function brings its module into the key; relative imports resolve;
    # a module named by a "module:attr" string (a registry for importlib) counts, a mere mention does not
    "new lazy import": (lambda root: [
        _append("fluxsr_core/zz_rel/__init__.py", "from .inner import helper\n")(root),
        _append("fluxsr_core/zz_rel/inner.py", "from .. import colorfix\nfrom ..models import codec\n\n"
                                               "REGISTRY = {'x': 'fluxsr_core.zz_rel.byname:Thing'}\n\n"
                                               "def helper():\n    'Unlike fluxsr_core.zz_rel.unused.'\n")(root),
        _append("fluxsr_core/zz_rel/byname.py")(root),
        _append("fluxsr_core/zz_rel/unused.py")(root),
        _append("tasks/degrade.py", "\n\ndef _zz():\n    from fluxsr_core.zz_rel import helper\n")(root),
    ], ("fluxsr_core.zz_rel", "fluxsr_core.zz_rel.inner")),
}


@pytest.fixture(scope="module")
def probes(tmp_path_factory) -> dict[str, dict]:
    """Code versions of every stage: the pristine copy, the same copy moved elsewhere, and each edit of EDITS."""
    base = _copy_checkout(tmp_path_factory.mktemp("checkout") / "a")
    roots = {"base": base}
    moved = tmp_path_factory.mktemp("elsewhere") / "deeper" / "b"
    moved.parent.mkdir(parents=True)
    roots["moved"] = Path(shutil.copytree(base, moved))
    for i, (name, (edit, _)) in enumerate(EDITS.items()):
        root = Path(shutil.copytree(base, tmp_path_factory.mktemp(f"edit{i}") / "c"))
        edit(root)
        roots[name] = root
    extra = {name: e for name, (_, e) in EDITS.items()}
    return _probe([(name, root, extra.get(name, ())) for name, root in roots.items()])


def _changed(probes: dict, name: str) -> set[str]:
    before, after = probes["base"]["versions"], probes[name]["versions"]
    return {s for s in STAGES if before[s] != after[s]}


# ---------------------------------------------------------------- the import graph of this checkout


def _stage_closure(stage: str) -> set[str]:
    module, names = STAGES[stage]
    tree = ast.parse(module_file(module).read_text())
    consts = {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name) and t.id in names}
    return {m for name in names for n in consts[name] for m in project_imports(n)}


def test_closures_reach_what_the_stages_run():
    train = _stage_closure("train")
    assert {"tasks.train", "tasks.train_worker", "fluxsr_core.latents", "fluxsr_core.train.loop",
            "fluxsr_core.train", "storage.latent_dataset", "tasks.encode"} <= train
    # encode imports decode_hr from tasks.degrade, which writes the HR array; its lazy import of fluxsr_core.degrade
    encode = _stage_closure("latents")
    assert {"tasks.degrade", "fluxsr_core.degrade", "storage.latent_store", "fluxsr_core.models.codec"} <= encode
    # parents of an imported submodule run their __init__.py
    assert {"fluxsr_core", "fluxsr_core.models", "tasks", "storage"} <= encode
    pairs = _stage_closure("pairs")
    assert {"fluxsr_core.teacher", "fluxsr_core.latents", "fluxsr_core.prompts", "storage.shards"} <= pairs
    assert "fluxsr_core.degrade" not in pairs and "fluxsr_core.colorfix" not in pairs
    models = _stage_closure("bench-models")
    assert {"fluxsr_core.student", "fluxsr_core.infer", "fluxsr_core.colorfix", "fluxsr_core.latents",
            "fluxsr_core.benchmark", "fluxsr_core.metrics"} <= models
    assert {"fluxsr_core.synthetic", "fluxsr_core.degrade", "fluxsr_core.imageio"} <= _stage_closure("testsets")
    # the benchmark rows' own modules are inside the scoring task's closure (it imports the student lazily),
    # so the task's cache key (CODE_MODULES only) and the stage directory's key move together
    assert models == _stage_closure("bench")


def test_old_hand_written_lists_are_covered():
    old = {
        "pairs": {"fluxsr_core.teacher", "fluxsr_core.models", "fluxsr_core.latents", "fluxsr_core.prompts",
                  "storage.shards", "tasks.pairs"},
        "lr": {"fluxsr_core.degrade", "fluxsr_core.basicsr_compat", "storage.shards", "tasks.degrade"},
        "latents": {"fluxsr_core.models", "fluxsr_core.latents", "storage.latent_store", "tasks.encode"},
        "train": {"fluxsr_core.train", "fluxsr_core.ftd", "fluxsr_core.losses", "fluxsr_core.perceptual",
                  "fluxsr_core.models", "storage.latent_dataset", "tasks.train_worker"},
        "bench": {"fluxsr_core.benchmark", "fluxsr_core.metrics", "fluxsr_core.imageio", "tasks.benchmark"},
        "bench-models": {"fluxsr_core.student", "fluxsr_core.infer", "fluxsr_core.colorfix", "fluxsr_core.models",
                         "fluxsr_core.ftd"},
        "testsets": {"fluxsr_core.synthetic", "fluxsr_core.degrade", "fluxsr_core.imageio", "tasks.benchmark"},
    }
    for stage, modules in old.items():  # (a module since moved away, e.g. fluxsr_core.ftd, is left out)
        assert {m for m in modules if module_file(m) is not None} <= _stage_closure(stage), stage


def test_closures_hold_only_project_source_files():
    for stage in STAGES:
        for m in _stage_closure(stage):
            assert m.partition(".")[0] in PROJECT_PACKAGES, m
            f = module_file(m)
            assert f.is_file() and f.suffix == ".py" and REPO in f.parents and "site-packages" not in f.parts, f
    for name in ("numpy", "torch", "prefect", "os"):
        assert module_file(name) is None
        with pytest.raises(ModuleNotFoundError):
            project_imports(name)


def test_modules_launched_with_python_m_are_named():
    """A module a task starts with ``-m`` is not reached by import: its stage must name it."""
    for stage, (module, _) in STAGES.items():
        for launched in re.findall(r'"-m",\s*"([\w.]+)"', module_file(module).read_text()):
            if launched.partition(".")[0] in PROJECT_PACKAGES:
                assert launched in _stage_closure(stage), (stage, launched)
    assert "tasks.train_worker" in _stage_closure("train")


# ---------------------------------------------------------------- real edits of a copy


def test_probe_imports_the_copy_and_no_torch(probes):
    for out in probes.values():
        assert out["imported"] == []  # code_version read the files, it imported none of them (nor torch)


def test_moved_checkout_keeps_its_keys(probes):
    assert probes["moved"]["versions"] == probes["base"]["versions"]
    assert probes["moved"]["caching_file"] != probes["base"]["caching_file"]


# edit -> (module touched, stages whose key must change, stages whose key must not change)
FACTS = {
    # the teacher (pairs) runs it, and so does everything after it, the benchmark's student included
    "fluxsr_core/latents.py": ("fluxsr_core.latents", set(PIPELINE) | {"bench", "bench-models"}, set()),
    # the degradation (a module of its package, reached through the package's __init__): degrade and the stages
    # after it, the benchmark's synthetic test set; never pairs
    "fluxsr_core/degrade/kernels.py": ("fluxsr_core.degrade.kernels", {"lr", "latents", "train", "testsets"},
                                       {"pairs"}),
    # the degrade task module decodes the HR array encode stores (encode imports it): degrade onwards, not pairs
    "tasks/degrade.py": ("tasks.degrade", {"lr", "latents", "train"}, {"pairs"} | set(BENCH)),
    # colour fix is inference: the benchmark's model rows; nothing that makes training data
    "fluxsr_core/colorfix.py": ("fluxsr_core.colorfix", {"bench-models"}, {"pairs", "lr", "latents"}),
    # the training loop (reached from the torchrun worker): training; nothing that makes training data
    "fluxsr_core/train/loop.py": ("fluxsr_core.train.loop", {"train"}, {"pairs", "lr", "latents"}),
    # the worker is reached by `python -m` only (named in train's CODE_MODULES); the dataset only it reads
    "tasks/train_worker.py": ("tasks.train_worker", {"train"}, set(STAGES) - {"train"}),
    "storage/latent_dataset.py": ("storage.latent_dataset", {"train"}, {"pairs", "lr", "latents", "testsets"}),
}


@pytest.mark.parametrize("edit", sorted(FACTS))
def test_touching_a_module_changes_exactly_the_stages_that_run_it(probes, edit):
    module, must, must_not = FACTS[edit]
    changed = _changed(probes, edit)
    assert must <= changed and not changed & must_not, changed
    # exactly the stages whose import closure holds the module, and every key after them in the pipeline
    assert changed == {s for s, closure in probes["base"]["closures"].items() if module in closure}
    assert all(later in changed for s in changed & set(PIPELINE) for later in PIPELINE[PIPELINE.index(s):])


def test_touching_unrelated_modules_changes_no_key(probes):
    # the CLI, the deployment setup, the upscale-files helper and a new module nobody imports
    assert _changed(probes, "unrelated") == set()


def test_a_new_lazy_import_joins_the_key(probes):
    out = probes["new lazy import"]
    assert "fluxsr_core.colorfix" not in probes["base"]["closures"]["lr"]
    assert {"fluxsr_core.zz_rel", "fluxsr_core.zz_rel.inner", "fluxsr_core.colorfix"} <= set(out["closures"]["lr"])
    # relative imports resolved; a package counts its __init__.py and what it imports, not every file in it
    package = set(out["extra"]["fluxsr_core.zz_rel"])
    assert {"fluxsr_core", "fluxsr_core.zz_rel", "fluxsr_core.zz_rel.inner", "fluxsr_core.colorfix",
            "fluxsr_core.models", "fluxsr_core.models.codec", "fluxsr_core.zz_rel.byname"} <= package
    assert "fluxsr_core.zz_rel.unused" not in package | set(out["closures"]["lr"])
    # importing the submodule runs the package's __init__.py, which imports it back: one closure
    assert set(out["extra"]["fluxsr_core.zz_rel.inner"]) == package
    assert _changed(probes, "new lazy import") == {"lr", "latents", "train"}


# ---------------------------------------------------------------- StagePolicy


def test_stage_policy_ignores_locations_only():
    policy = StagePolicy(stage="lr", modules=("tasks.degrade",))
    inputs = {"directory": "/data/a/lr/k1", "shard": 3, "pairs_shard": "/data/a/pairs/k0/pairs-000003.tar",
              "pairs_entry": {"name": "pairs-000003.tar", "sha256": "ab"}, "degrade_json": "{}"}
    key = policy.compute_key(None, inputs, {})
    assert set(LOCATION_ARGS) >= {"directory", "pairs_shard"}
    moved = {**inputs, "directory": "/elsewhere/lr/k1", "pairs_shard": "/elsewhere/pairs/k0/pairs-000003.tar"}
    assert policy.compute_key(None, moved, {}) == key
    assert policy.compute_key(None, {**inputs, "rdzv_endpoint": "h:1", "node_rank": 1}, {}) == key
    for change in ({"shard": 4}, {"pairs_entry": {"name": "pairs-000003.tar", "sha256": "cd"}},
                   {"degrade_json": '{"variants": 2}'}):
        assert policy.compute_key(None, {**inputs, **change}, {}) != key, change
    assert StagePolicy(stage="latents", modules=("tasks.degrade",)).compute_key(None, inputs, {}) != key
    assert StagePolicy(stage="lr", modules=("tasks.train_worker",)).compute_key(None, inputs, {}) != key
