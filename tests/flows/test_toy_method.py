"""A method is its module and one registry line: a toy method registered here, in this test alone, trains, is listed
by `fluxsr methods` with its knob, gets a control in the WebUI that reaches its sampler, and a benchmark row per
knob value; no other file of fluxsr names it."""

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fluxsr_core.methods.base import Method
from fluxsr_core.methods.knobs import Knob
from deploying import free_port
from helpers import latent_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass
class Toy(Method):
    """A toy one-step method: x̂ = z_L - strength·T·v(z_L, T), trained by the latent error of the full step."""

    name: ClassVar[str] = "toy"
    term_names: ClassVar[tuple[str, ...]] = ("total",)
    knobs: ClassVar[tuple[Knob, ...]] = (
        Knob("strength", float, 1.0, "How much of the one step is taken.", low=0.0, high=1.0),)
    config_keys: ClassVar[dict[str, str]] = {"guidance": "train.guidance"}

    guidance: float = 3.5
    T: float = 0.5

    def sample_times(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {"t": torch.full((n,), self.T)}

    def loss(self, model, batch, times):
        with model.autocast():
            z_hat = batch["z_L"] - self.T * model.velocity(batch["z_L"], times["t"])
        return {"total": F.mse_loss(z_hat.float(), batch["z0"])}

    def sample(self, model, z_L: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        t = torch.full((z_L.shape[0],), self.T, device=z_L.device, dtype=z_L.dtype)
        return z_L - strength * self.T * model.velocity(z_L, t)

    def metadata(self) -> dict[str, Any]:
        return {"guidance": self.guidance, "T": self.T}

    @classmethod
    def from_metadata(cls, params: dict[str, Any]) -> "Toy":
        return cls(**params)


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory, one_torch_thread):
    """The toy method registered (for this module only), trained 6 steps on the tiny preset and exported; with the
    losses of its training."""
    from fluxsr_core.config import tiny
    from fluxsr_core.methods import METHODS, build_method, register_method
    from fluxsr_core.models import load_components
    from fluxsr_core.models.sr_model import SRModel
    from fluxsr_core.train.loop import Trainer

    register_method("toy", f"{__name__}:Toy")
    try:
        cfg = tiny()
        method = build_method("toy", cfg)
        trainer = Trainer(method, SRModel(load_components(cfg.model), guidance=method.guidance),
                          latent_samples(2, seed=3), lora_cfg=cfg.lora,
                          train_cfg=cfg.train.model_copy(update={"steps": 6, "batch_size": 2, "learning_rate": 1e-2,
                                                                 "lr_warmup_steps": 0}))
        history = trainer.fit()
        root = tmp_path_factory.mktemp("toy-runs")
        trainer.export(root / "toy")
        yield root, root / "toy", [r["total"] for r in history]
    finally:
        METHODS.pop("toy", None)


def test_the_toy_method_trains_and_its_model_folder_says_what_it_is(toy_model):
    from fluxsr_core.model_folder import read_info

    _, folder, losses = toy_model
    assert losses[-1] < losses[0]  # the fixed two samples, every step: the loss falls
    info = read_info(folder)
    assert info.method == "toy" and info.knobs == {"strength": 1.0}


def test_fluxsr_methods_lists_the_toy_method_and_its_knob(toy_model):
    from typer.testing import CliRunner

    from flows.cli import app

    said = CliRunner().invoke(app, ["methods"]).output
    assert "toy: A toy one-step method" in said
    assert "--knob strength: float [0, 1], default 1.0. How much of the one step is taken." in said
    assert "--set train.guidance" in said.split("toy:")[1]


def test_the_toy_knob_is_checked_by_its_range(toy_model):
    from fluxsr_core.errors import UsageError

    with pytest.raises(UsageError, match=r"toy knob strength=1\.5 is out of range: strength: float \[0, 1\]"):
        Toy.check_knobs({"strength": 1.5})
    with pytest.raises(UsageError, match="method 'toy' has no inference knob \\['tau'\\]"):
        Toy.check_knobs({"tau": 0.5})


def test_the_webui_has_a_control_for_the_toy_knob_that_reaches_its_sampler(toy_model, tmp_path):
    from gradio_client import Client, handle_file

    from fluxsr_core.config import tiny
    from flows.serve import build_app

    root, folder, _ = toy_model
    lr = tmp_path / "lr.png"
    Image.effect_mandelbrot((16, 16), (-2.0, -1.2, 0.8, 1.2), 60).convert("RGB").save(lr)
    demo = build_app(tiny(), root=root)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        params = [p["parameter_name"] for p in client.view_api(return_format="dict",
                                                               print_info=False)["named_endpoints"]["/upscale"]["parameters"]]
        assert "strength" in params
        outputs = {}
        for strength in (0.0, 1.0):
            _, downloads, report = client.predict(files=[handle_file(lr)], folder=str(folder.resolve()), scale=4,
                                                  tile=0, color_fix="none", strength=strength, api_name="/upscale")
            assert "1 of 1 upscaled" in report
            outputs[strength] = Image.open(downloads[0]).tobytes()
        assert outputs[0.0] != outputs[1.0]  # the control's value reached Toy.sample
    finally:
        demo.close()


def test_a_benchmark_row_per_toy_knob_value(toy_model, tmp_path):
    from fluxsr_core.config import BenchConfig
    from fluxsr_core.config import tiny
    from fluxsr_core.methods import knob_rows
    from tasks.benchmark import score_testset

    _, folder, _ = toy_model
    (tmp_path / "lr").mkdir()
    (tmp_path / "hr").mkdir()
    hr = Image.effect_mandelbrot((64, 64), (-2.0, -1.2, 0.8, 1.2), 60).convert("RGB")
    hr.save(tmp_path / "hr" / "a.png")
    hr.resize((16, 16), Image.BICUBIC).save(tmp_path / "lr" / "a.png")
    rows = knob_rows({"toy": str(folder)}, {}, {"toy": {"strength": [0, 1]}})
    assert rows == {"toy strength=0": ("toy", {"strength": 0.0}), "toy strength=1": ("toy", {"strength": 1.0})}
    result = score_testset.fn(str(tmp_path / "bench"), "toy", str(tmp_path / "lr"), str(tmp_path / "hr"), {},
                              ["bicubic", *rows], {}, BenchConfig(metrics=["psnr"], crops=0),
                              model_dirs={"toy": str(folder)}, model_runs={r: list(v) for r, v in rows.items()},
                              student=tiny())
    psnr = {row: values["psnr"] for row, values in result["summary"].items()}
    assert set(psnr) == {"bicubic", "toy strength=0", "toy strength=1"}
    assert psnr["toy strength=0"] != psnr["toy strength=1"]
