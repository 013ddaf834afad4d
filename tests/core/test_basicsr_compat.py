import math

import numpy as np
import torch


def test_basicsr_degradations_import_and_run():
    from fluxsr_core.basicsr_compat import degradations, filter2D

    np.random.seed(0)
    kernel = degradations.random_mixed_kernels(
        ["iso", "aniso"], [0.5, 0.5], kernel_size=21, sigma_x_range=[0.2, 3], sigma_y_range=[0.2, 3],
        rotation_range=[-math.pi, math.pi], betag_range=[0.5, 4], betap_range=[1, 2], noise_range=None,
    )
    assert kernel.shape == (21, 21) and abs(kernel.sum() - 1.0) < 1e-5
    img = torch.rand(1, 3, 32, 32)
    out = filter2D(img, torch.from_numpy(kernel).float()[None])
    assert out.shape == img.shape and not torch.allclose(out, img)
    noisy = degradations.random_add_gaussian_noise_pt(img, sigma_range=(1, 30), gray_prob=0.4, clip=True, rounds=False)
    assert noisy.shape == img.shape and 0 <= noisy.min() and noisy.max() <= 1


def test_import_through_basicsr_directly_also_works_after_compat():
    import fluxsr_core.basicsr_compat  # noqa: F401
    import basicsr.data.degradations as d

    assert hasattr(d, "circular_lowpass_kernel")
