"""Every method on every backbone (the seam's conformance suite): a training step lowers its loss on a fixed batch,
a resumed run equals the uninterrupted one (base pretraining, every weight, too), a model folder round-trips to the
same output, and one-step inference on odd-sized images with tiles has the right shape and finite values."""

import shutil

import pytest
import torch

from conftest import BACKBONES
from helpers import TRAINED_METHODS, as_if_trained, latent_samples, latent_shape, train_tiny_models

CASES = [(m, b) for b in BACKBONES for m in TRAINED_METHODS]


def _cfg(backbone: str):
    from fluxsr_core.config import tiny

    cfg = tiny()
    cfg.model.backbone = backbone
    return cfg


@pytest.fixture(scope="module", params=BACKBONES)
def teachers(request, tmp_path_factory):
    """backbone -> a trained tiny SR teacher folder (what the distilled methods distil)."""
    return request.param, train_tiny_models(tmp_path_factory.mktemp(request.param), backbone=request.param)


def _trainer(method_name: str, backbone: str, teacher_folder=None, run_dir=None, **train):
    from fluxsr_core.methods import build_method
    from fluxsr_core.models import load_components
    from fluxsr_core.models.sr_model import SRModel
    from fluxsr_core.student import load_student
    from fluxsr_core.train.loop import Trainer

    cfg = _cfg(backbone)
    method = build_method(method_name, cfg)
    if method.distils:
        method.set_teacher(as_if_trained(load_student(cfg, teacher_folder).model))
    components = load_components(cfg.model)
    return Trainer(method, SRModel(components, guidance=method.guidance),
                   latent_samples(2, seed=3, shape=latent_shape(components)),
                   lora_cfg=cfg.lora, run_dir=run_dir,
                   train_cfg=cfg.train.model_copy(update={"batch_size": 2, "learning_rate": 1e-2, "lr_warmup_steps": 0,
                                                          **train}))


@pytest.mark.parametrize("method_name", (*TRAINED_METHODS, "base"))
def test_a_training_step_lowers_the_loss_on_a_fixed_batch(teachers, method_name):
    backbone, folders = teachers
    tr = _trainer(method_name, backbone, folders["sr-teacher"])
    batch = tr.batch_for_step(1)
    times = tr.method.sample_times(2, torch.Generator().manual_seed(5))

    def loss():
        return tr.loss_module(batch, times)["total"].item()

    start = loss()
    for step in range(1, 7):
        tr.train_step(step, batch)
    assert loss() < start, (backbone, method_name)


@pytest.mark.parametrize("method_name", (*TRAINED_METHODS, "base"))
def test_resume_equals_uninterrupted_and_the_folder_round_trips(teachers, method_name, tmp_path):
    from fluxsr_core.student import load_student

    backbone, folders = teachers
    full = _trainer(method_name, backbone, folders["sr-teacher"], tmp_path / "full", steps=2, checkpoint_every=1)
    full.fit()
    shutil.copytree(tmp_path / "full" / "step-000001", tmp_path / "killed" / "step-000001")
    resumed = _trainer(method_name, backbone, folders["sr-teacher"], tmp_path / "killed", steps=2, checkpoint_every=1)
    assert resumed.resume() and resumed.step == 1
    resumed.fit()
    want = full.transformer.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in resumed.transformer.state_dict().items())

    if not full.method.super_resolves:  # base pretraining: its folder is a micro preset's model.path, not an SR model
        return
    full.export(tmp_path / "final")
    loaded = load_student(_cfg(backbone), tmp_path / "final")
    assert loaded.info.base["backbone"] == backbone
    z_L = torch.randn(latent_shape(loaded.model.components, batch=1), generator=torch.Generator().manual_seed(6))
    knobs = {"steps": 1} if "steps" in full.method.knob_defaults() else {}
    full.transformer.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.method.sample(loaded.model, z_L, **knobs),
                                   full.method.sample(full.model, z_L, **knobs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("method_name", TRAINED_METHODS)
def test_one_step_upscale_of_odd_sizes_with_tiles(teachers, method_name):
    from fluxsr_core.infer import upscale
    from fluxsr_core.student import load_student

    backbone, folders = teachers
    student = load_student(_cfg(backbone), folders[method_name])
    knobs = {"steps": 1} if "steps" in student.method.knob_defaults() else {}
    g = torch.Generator().manual_seed(7)
    for h, w in ((240, 320), (333, 517)):
        image = torch.rand(1, 3, h // 4, w // 4, generator=g)
        with torch.no_grad():
            out = upscale(student.model, student.method, image, scale=4.0, tile=16, overlap=4, knobs=knobs)
        assert out.shape == (1, 3, round(h // 4 * 4.0), round(w // 4 * 4.0)) and torch.isfinite(out).all()


@pytest.mark.parametrize("method_name", (*TRAINED_METHODS, "base"))
def test_knobs_are_declared_once_typed_and_range_checked(method_name):
    """Every knob's default passes its own check, a value past its range is refused naming method, knob and range,
    and each training parameter names a parameter of the method and a config key that exists."""
    from fluxsr_core.errors import UsageError
    from fluxsr_core.methods import method_class

    cls = method_class(method_name)
    names = [k.name for k in cls.knobs]
    assert len(names) == len(set(names))
    assert cls.check_knobs({}) == cls.knob_defaults()
    for knob in cls.knobs:
        assert knob.check(knob.default, method_name) == knob.default and type(knob.default) is knob.kind
        for bad in (knob.low - 1 if knob.low is not None else None, knob.high + 1 if knob.high is not None else None):
            if bad is not None:
                with pytest.raises(UsageError, match=f"{method_name} knob {knob.name}=.* is out of range"):
                    cls.check_knobs({knob.name: bad})
    training = cls.training_knobs()  # a config key that does not exist fails here, naming it
    assert all(k.trains for k in training) and not any(k.trains for k in cls.knobs)
    params = cls(**{k.name: k.default for k in training}).metadata()  # a name that is no parameter fails here
    assert all(params[k.name] == k.default for k in training)
