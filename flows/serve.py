"""``fluxsr serve``: the WebUI, a Gradio app over the one inference path.

Uploads go through ``fluxsr_core.upscale_files.upscale_files`` with a ``Student`` (what
``fluxsr upscale`` runs), so a file that is not an image, is truncated or declares more
pixels than ``infer.max_input_pixels`` is a line in the page's report while the others are
written. One control per inference knob of the registered methods (``Method.knobs``: its type, range and help),
shown with the chosen model's method's defaults when that method has it and hidden otherwise.
Requests queue one at a time (one event, concurrency 1: two people never run a model at
once), and each model folder loads once (``ModelCache`` keeps the last ``keep`` loaded).
"""

from __future__ import annotations

import inspect
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from fluxsr_core import model_folder
from fluxsr_core.config import FluxSRConfig
from fluxsr_core.errors import FluxSRError
from fluxsr_core.methods import METHODS, method_class
from fluxsr_core.student import DEFAULT_METHOD, Student, load_student

BASE = ""  # the dropdown's value for the untrained base model
BASE_LABEL = "base model (untrained: a smoke test, not super-resolution)"
# Where trained models sit under --root: a pipeline output root, or a folder of them, and exported folders.
MODEL_PATTERNS = ("train/*/final", "*/train/*/final", "models/*/versions/*", "*/models/*/versions/*", "*")


def all_knobs() -> dict:
    """Every registered method's inference knobs by name, in registry order (a name two methods share is one
    control: the first declaration gives its range and help)."""
    out = {}
    for name in METHODS:
        for knob in method_class(name).knobs:
            out.setdefault(knob.name, knob)
    return out


def knob_control(knob, value):
    """The Gradio control of one knob: a slider for a bounded float, a number box for an int, a dropdown for
    choices."""
    import gradio as gr

    label, elem_id = f"{knob.name}: {knob.help}", knob.name.replace("_", "-")
    if knob.choices is not None:
        return gr.Dropdown(list(knob.choices), value=value, label=label, elem_id=elem_id)
    if knob.kind is float and knob.low is not None and knob.high is not None:
        step = 0.01 if knob.high - knob.low <= 1 else 0.1
        return gr.Slider(knob.low, knob.high, value=value, step=step, label=label, elem_id=elem_id)
    return gr.Number(value=value, label=label, minimum=knob.low, maximum=knob.high,
                     precision=0 if knob.kind is int else None, elem_id=elem_id)


def find_models(root: str | Path) -> list[tuple[str, str]]:
    """(label, folder) of every trained model under ``root``, newest first."""
    root = Path(root)
    found: dict[Path, float] = {}
    for pattern in MODEL_PATTERNS:
        for info in root.glob(f"{pattern}/{model_folder.INFO_FILE}"):
            found[info.parent.resolve()] = info.stat().st_mtime
    out = []
    for folder in sorted(found, key=lambda p: (-found[p], str(p))):
        try:
            info = model_folder.read_info(folder)
        except Exception:  # noqa: BLE001 - a folder we cannot read is not offered
            continue
        where = folder.relative_to(root.resolve()) if folder.is_relative_to(root.resolve()) else folder
        out.append((f"{info.method} · {where} · {info.steps} steps", str(folder)))
    return out


def method_of(folder: str) -> str:
    return DEFAULT_METHOD if folder == BASE else model_folder.read_info(folder).method


class ModelCache:
    """Students by model folder, each loaded once by ``load`` (``load_student``: config, folder or None for the base
    model); the least recently used beyond ``keep`` is dropped."""

    def __init__(self, cfg: FluxSRConfig, keep: int = 2, load: Callable[..., Student] = load_student):
        self.cfg, self.keep, self.load = cfg, keep, load
        self.loaded: OrderedDict[str, Student] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, folder: str) -> Student:
        with self.lock:
            if folder not in self.loaded:
                self.loaded[folder] = self.load(self.cfg, folder or None)
                while len(self.loaded) > self.keep:
                    self.loaded.popitem(last=False)
            self.loaded.move_to_end(folder)
            return self.loaded[folder]


def _note(folder: str) -> str:
    if folder == BASE:
        return (f"**Note:** no trained model is selected: the {BASE_LABEL} runs. Train one with "
                "`fluxsr run` and pick it here (models are found under `--root`).")
    info = model_folder.read_info(folder)
    return f"**{info.method}** model, {info.steps} steps, base `{info.base.get('preset')}`: `{folder}`"


def _report(outcomes, total: float) -> str:
    rows = ["| file | result | seconds |", "|---|---|---:|"]
    for o in outcomes:
        result = f"failed: {o.error}" if o.error else f"written ({'; '.join(o.notes) or 'RGB'})"
        rows.append(f"| {Path(o.source).name} | {result.replace('|', '/')} | "
                    f"{'' if o.seconds is None else f'{o.seconds:.2f}'} |")
    done = sum(1 for o in outcomes if not o.error)
    return f"{done} of {len(outcomes)} upscaled in {total:.2f} s.\n\n" + "\n".join(rows)


def build_app(cfg: FluxSRConfig, root: str | Path = "runs", initial: str | None = None, keep: int = 2,
              load: Callable[..., Student] = load_student):
    """The Blocks app (not launched). ``initial``: a model folder to select first (default the newest found);
    ``load``: how a model folder becomes a ``Student`` (``ModelCache``)."""
    import gradio as gr
    from PIL import Image

    from fluxsr_core.upscale_files import upscale_files

    models = ModelCache(cfg, keep, load)
    found = find_models(root)
    if initial is not None:
        initial = str(model_folder.model_dir(initial).resolve())  # a wrong --model fails here, naming the file
        if initial not in dict((v, k) for k, v in found):
            found.insert(0, (f"{model_folder.read_info(initial).method} · {initial}", initial))
    choices = [*found, (BASE_LABEL, BASE)]
    first = initial or (found[0][1] if found else BASE)
    infer = cfg.infer
    knobs_shown = all_knobs()

    def visible(folder: str) -> list:
        try:
            method, note = method_class(method_of(folder)), _note(folder)
            defaults = {**method.knob_defaults(), **{k: v for k, v in infer.knobs.items() if k in method.knob_defaults()}}
        except FluxSRError as err:  # a typed path that is not a model folder: said on the page
            defaults, note = {}, f"**Not a model folder:** {err}"
        return ([gr.update(visible=k in defaults, **({"value": defaults[k]} if k in defaults else {}))
                 for k in knobs_shown] + [gr.update(value=note)])

    def run(files, folder, scale, tile, color_fix, *knob_values, progress=gr.Progress()):
        if not files:
            raise gr.Error("Upload one or more images first.")
        paths = [Path(f if isinstance(f, str) else f.name) for f in files]
        progress(0, desc="loading the model")
        try:
            student = models.get(folder or BASE)
        except FluxSRError as err:  # a wrong path or a model of another base: a message, not a traceback
            raise gr.Error(str(err)) from None
        mine = student.method.knob_defaults()
        try:
            knobs = student.method.check_knobs({k: v for k, v in zip(knobs_shown, knob_values) if k in mine})
        except FluxSRError as err:  # a value out of the knob's range: said on the page
            raise gr.Error(str(err)) from None
        settings = infer.model_copy(update={"scale": float(scale), "tile": int(tile) or None, "color_fix": color_fix})
        out = Path(tempfile.mkdtemp(prefix="fluxsr-serve-"))
        outcomes, start = [], time.perf_counter()
        for i, path in enumerate(paths):  # one sub-folder each: two uploads of one name never collide
            progress(i / len(paths), desc=f"{path.name} ({i + 1} of {len(paths)})")
            outcomes += upscale_files(student, [path], out / f"{i:03d}", settings, knobs=knobs)
        total = time.perf_counter() - start
        written = [o for o in outcomes if o.output]
        compare = None
        if written:
            before = out / "before.png"
            with Image.open(written[0].output) as after, Image.open(written[0].source) as lr:
                lr.convert("RGB").resize(after.size, Image.BICUBIC).save(before)
            compare = (str(before), str(written[0].output))
        return compare, [str(o.output) for o in written] or None, _report(outcomes, total)

    # the API's parameters by name (gradio_client's predict(tau=..., steps=...)): one per knob, as the page's controls
    fixed = inspect.signature(run).parameters
    run.__signature__ = inspect.Signature(
        [*(p for n, p in fixed.items() if n not in ("knob_values", "progress")),
         *(inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD) for k in knobs_shown), fixed["progress"]])

    with gr.Blocks(title="fluxsr") as demo:
        gr.Markdown("# fluxsr: one-step real-world super-resolution\nUpload LR images, pick a model, run.")
        with gr.Row():
            with gr.Column():
                files = gr.File(label="Images", file_count="multiple", elem_id="inputs")
                model = gr.Dropdown(choices=choices, value=first, label="Model", allow_custom_value=True,
                                    elem_id="model")
                note = gr.Markdown(_note(first), elem_id="model-note")
                with gr.Row():
                    scale = gr.Number(value=infer.scale, label="Scale", minimum=1, maximum=16)
                    tile = gr.Number(value=infer.tile or 0, label="Tile (latent px, 0 = whole image)", minimum=0,
                                     precision=0)
                    color_fix = gr.Dropdown(["adain", "wavelet", "none"], value=infer.color_fix, label="Colour fix")
                controls = [knob_control(knob, infer.knobs.get(name, knob.default))
                            for name, knob in knobs_shown.items()]
                go = gr.Button("Upscale", variant="primary", elem_id="run")
            with gr.Column():
                compare = gr.ImageSlider(label="Before (bicubic) / after", type="filepath", elem_id="compare")
                downloads = gr.File(label="Download", file_count="multiple", elem_id="downloads")
                report = gr.Markdown(elem_id="report")
        model.change(visible, inputs=model, outputs=[*controls, note])
        demo.load(visible, inputs=model, outputs=[*controls, note])
        go.click(run, inputs=[files, model, scale, tile, color_fix, *controls], outputs=[compare, downloads, report],
                 api_name="upscale", concurrency_limit=1)
    demo.queue(default_concurrency_limit=1)
    return demo

