"""Imports point one way: fluxsr_core never pulls in Prefect or storage formats."""

import subprocess
import sys


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
