"""``fluxsr serve``: the WebUI, a Gradio app over the one inference path.

Uploads go through ``fluxsr_core.upscale_files.upscale_files`` with a ``Student`` (what
``fluxsr upscale`` runs), so a file that is not an image, is truncated or declares more
pixels than ``infer.max_input_pixels`` is a line in the page's report while the others are
written. The controls of the chosen model's method are shown (FTD: step fraction; OFTSR: τ;
MeanFlow: steps and guidance; the SR teacher: steps and CFG scale); the others are hidden.
Requests queue one at a time (one event, concurrency 1: two people never run a model at
once), and each model folder loads once (``ModelCache`` keeps the last ``keep`` loaded).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from fluxsr_core import model_folder
from fluxsr_core.config import FluxSRConfig
from fluxsr_core.errors import FluxSRError
from fluxsr_core.methods import method_class
from fluxsr_core.student import DEFAULT_METHOD, Student, load_student

BASE = ""  # the dropdown's value for the untrained base model
BASE_LABEL = "base model (untrained: a smoke test, not super-resolution)"
# Where trained models sit under --root: a pipeline output root, or a folder of them, and exported folders.
MODEL_PATTERNS = ("train/*/final", "*/train/*/final", "models/*/versions/*", "*/models/*/versions/*", "*")
KNOBS = ("step_fraction", "tau", "steps", "guidance", "guidance_scale", "seed")  # every method's, in page order
STEPS = (1, 2, 4)  # MeanFlow's intervals of [0, 1]; the SR teacher takes any count


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
        initial = str(model_folder.model_dir(initial).resolve())  # a wrong --lora fails here, naming the file
        if initial not in dict((v, k) for k, v in found):
            found.insert(0, (f"{model_folder.read_info(initial).method} · {initial}", initial))
    choices = [*found, (BASE_LABEL, BASE)]
    first = initial or (found[0][1] if found else BASE)
    infer = cfg.infer

    def visible(folder: str) -> list:
        try:
            knobs, note = method_class(method_of(folder)).knobs, _note(folder)
        except FluxSRError as err:  # a typed path that is not a model folder: said on the page
            knobs, note = {}, f"**Not a model folder:** {err}"
        return [gr.update(visible=k in knobs) for k in KNOBS] + [gr.update(value=note)]

    def run(files, folder, scale, tile, color_fix, step_fraction, tau, steps, guidance, guidance_scale, seed,
            progress=gr.Progress()):
        if not files:
            raise gr.Error("Upload one or more images first.")
        paths = [Path(f if isinstance(f, str) else f.name) for f in files]
        progress(0, desc="loading the model")
        try:
            student = models.get(folder or BASE)
        except FluxSRError as err:  # a wrong path or a model of another base: a message, not a traceback
            raise gr.Error(str(err)) from None
        given = {"step_fraction": step_fraction, "tau": tau, "steps": int(steps), "guidance": guidance,
                 "guidance_scale": guidance_scale, "seed": int(seed)}
        knobs = {k: v for k, v in given.items() if k in student.method.knobs}
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
                controls = {
                    "step_fraction": gr.Slider(0, 1, value=infer.step_fraction, step=0.05,
                                               label="Step fraction (FTD: 1 = the model, 0 = the bicubic input)",
                                               elem_id="step-fraction"),
                    "tau": gr.Slider(0, 1, value=0.99 if infer.tau is None else infer.tau, step=0.01,
                                     label="τ (OFTSR: 0 = fidelity, 1 = realism)", elem_id="tau"),
                    "steps": gr.Dropdown(list(STEPS) + [8], value=infer.steps or 1, label="Steps"),
                    "guidance": gr.Slider(1, 5, value=infer.guidance or 1.0, step=0.1,
                                          label="Guidance w (MeanFlow: distilled CFG, 1 = none)"),
                    "guidance_scale": gr.Slider(1, 5, value=infer.guidance_scale or 1.0, step=0.1,
                                                label="CFG scale (SR teacher: w != 1 costs 2 evaluations a step)"),
                    "seed": gr.Number(value=infer.seed, label="Seed (source noise)", precision=0),
                }
                go = gr.Button("Upscale", variant="primary", elem_id="run")
            with gr.Column():
                compare = gr.ImageSlider(label="Before (bicubic) / after", type="filepath", elem_id="compare")
                downloads = gr.File(label="Download", file_count="multiple", elem_id="downloads")
                report = gr.Markdown(elem_id="report")
        knob_controls = [controls[k] for k in KNOBS]
        model.change(visible, inputs=model, outputs=[*knob_controls, note])
        demo.load(visible, inputs=model, outputs=[*knob_controls, note])
        go.click(run, inputs=[files, model, scale, tile, color_fix, *knob_controls], outputs=[compare, downloads, report],
                 api_name="upscale", concurrency_limit=1)
    demo.queue(default_concurrency_limit=1)
    return demo

