"""Imports point one way: fluxsr_core never pulls in Prefect or storage formats, and the static import graph of the
product (and of bench/) has no cycle and no arrow back up its layers.

The layers, lowest first: ``fluxsr_core`` (the ML) -> ``storage`` (shards, Zarr, manifests) -> ``tasks`` (one
resumable unit each) -> ``flows`` (wiring, CLI) -> ``bench`` (scripts printing figures). A module may import its
own layer and the ones below it, never one above. Inside ``fluxsr_core`` the sub-packages are ordered too,
``CORE_ORDER``: a base's seam (``backbones``) is below the networks built on it (``models``), the training methods
that use those (``methods``) and the loop that runs a method (``train``). fluxsr_core's own top-level modules
(``config``, ``errors``, ``infer``, ``student``, ...) are in no order: the cycle check covers them.
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("fluxsr_core", "storage", "tasks", "flows", "bench")  # lowest first
CORE_ORDER = ("backbones", "models", "methods", "train")  # fluxsr_core's sub-packages, lowest first


def modules() -> dict[str, Path]:
    """Every module of the layers by dotted name (a package by its own name); bench/'s scripts as ``bench.<name>``."""
    out = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {module of the layers it imports: line}, from every import statement in its code (those inside
    functions too: a lazy import is still an arrow). An import resolves to the deepest module it names
    (``from a.b import c``: ``a.b.c`` when that is a module, else ``a.b``); bench/'s scripts import each other by
    bare name (bench/ is their ``sys.path`` entry)."""
    known = modules()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in known.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        in_bench = module.split(".")[0] == "bench"
        arrows: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                names = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                target = resolve(f"bench.{name}" if in_bench and f"bench.{name.split('.')[0]}" in known else name)
                if target and target != module:
                    arrows.setdefault(target, node.lineno)
        graph[module] = arrows
    return graph


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (its modules in import order, the first repeated last) per strongly connected component of more
    than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:  # v is the root of a component: it and what is above it on the stack
            component = set(stack[stack.index(v):])
            del stack[stack.index(v):]
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [cycle_through(min(c), c, graph) for c in components]


def cycle_through(start: str, component: set[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """The shortest path start -> ... -> start inside ``component`` (breadth first)."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    return [*paths[v], start]
                if w in component and w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{start} is in no cycle of {sorted(component)}")


def rank(module: str) -> tuple[int, int | None]:
    """(layer, fluxsr_core sub-package or None) of a module, each lowest first."""
    parts = module.split(".")
    in_order = parts[0] == "fluxsr_core" and len(parts) > 1 and parts[1] in CORE_ORDER
    return LAYERS.index(parts[0]), CORE_ORDER.index(parts[1]) if in_order else None


def test_import_graph_has_no_cycle():
    """No module imports, through any chain, one that imports it back (lazy imports included), in the product and
    in bench/."""
    graph = import_graph()
    cycles = [" -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(c, c[1:])) + f" -> {c[-1]}"
              for c in find_cycles(graph)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_import_points_up_the_layers():
    """A module imports its own layer and lower ones only (``LAYERS``), and inside fluxsr_core a sub-package never
    imports a higher one (``CORE_ORDER``: models never imports train)."""
    graph = import_graph()
    up = []
    for module, arrows in sorted(graph.items()):
        layer, sub = rank(module)
        for target, line in sorted(arrows.items()):
            t_layer, t_sub = rank(target)
            if t_layer > layer or (t_layer == layer and sub is not None and t_sub is not None and t_sub > sub):
                up.append(f"{module} (line {line}) imports {target}")
    assert not up, "imports that point up the layers:\n" + "\n".join(up)


def test_the_graph_sees_cycles_and_lazy_imports():
    """The checks above can fail: the graph holds a function-level import and a bare bench/ name, and
    ``find_cycles`` reports a cycle it is given."""
    graph = import_graph()
    assert "fluxsr_core.models.low_vram" in graph["fluxsr_core.student"]  # inside ``load_student``
    assert "bench.train_step" in graph["bench.pairs"]  # ``from train_step import ...``
    assert find_cycles({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}) == [["a", "b", "c", "a"]]


def test_core_imports_no_prefect_or_storage():
    code = (
        "import sys, pkgutil, importlib, fluxsr_core\n"
        "for m in pkgutil.walk_packages(fluxsr_core.__path__, 'fluxsr_core.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('prefect', 'storage', 'tasks', 'flows', 'webdataset', 'zarr')]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# What only a backbone's module may name: FLUX.1's (and later bases') tensors, ids, packing and guidance input.
BACKBONE_ONLY = {"x_embedder", "transformer_blocks", "single_transformer_blocks", "img_ids", "txt_ids",
                 "guidance_embeds", "time_text_embed", "pooled_projections", "pos_embed", "_pack_latents",
                 "_unpack_latents", "FluxTransformer2DModel", "FluxPipeline", "calculate_shift", "flux1"}


def _names(tree) -> set[str]:
    """Identifiers, attributes, keywords, imported names and string constants of a module's code (not its
    docstrings or comments)."""
    import ast

    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            out.add(node.id)
        elif isinstance(node, ast.Attribute):
            out.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg:
            out.add(node.arg)
        elif isinstance(node, ast.alias):
            out.update(node.name.split("."))
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.update(node.module.split("."))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.update(node.value.replace(".", " ").split())
    return out


def test_only_backbone_modules_name_a_bases_tensors():
    """Methods, stages, inference, streaming, plan and the WebUI speak to ``fluxsr_core.backbones``' record only:
    outside ``fluxsr_core/backbones/`` no module of the product names FLUX.1's packing, ids, blocks or guidance."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = {}
    for package in ("fluxsr_core", "flows", "tasks", "storage"):
        for path in sorted((root / package).rglob("*.py")):
            if "backbones" in path.relative_to(root).parts:
                continue
            named = _names(ast.parse(path.read_text())) & BACKBONE_ONLY
            if named:
                offenders[str(path.relative_to(root))] = sorted(named)
    assert not offenders, offenders


def test_low_vram_modes_do_not_import_training():
    """``models.low_vram`` (what inference loads to quantise or offload) takes its blocks from the backbone, not from
    the trainer's parallelism module: importing it loads nothing of ``fluxsr_core.train``."""
    code = ("import sys, fluxsr_core.models.low_vram\n"
            "bad = [m for m in sys.modules if m.startswith('fluxsr_core.train')]\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
