"""CARAFE++ downsampling (Eq. 14) against a naive loop."""

from __future__ import annotations

import pytest
import torch

from crapnet_core.carafe import CARAFEDownsample, reassemble, reassemble_naive


@pytest.mark.parametrize(
    "h,w,k,factor", [(32, 32, 5, 4), (16, 12, 5, 4), (10, 9, 3, 4), (8, 8, 4, 4), (9, 7, 2, 3), (6, 6, 5, 2)]
)
def test_reassemble_matches_naive(h, w, k, factor):
    g = torch.Generator().manual_seed(h * 100 + w)
    x = torch.randn(2, 3, h, w, generator=g)
    ho, wo = -(-h // factor), -(-w // factor)
    kernels = torch.softmax(torch.randn(2, k * k, ho, wo, generator=g), dim=1)
    fast = reassemble(x, kernels, k, factor)
    slow = reassemble_naive(x, kernels, k, factor)
    assert fast.shape == (2, 3, ho, wo)
    assert slow.abs().max() > 0
    assert torch.allclose(fast, slow, atol=1e-5)


def test_module_matches_naive_with_predicted_kernels():
    torch.manual_seed(0)
    m = CARAFEDownsample(channels=8, factor=4, kernel_size=5, encoder_kernel=3, compressed=4)
    x = torch.randn(1, 8, 16, 16)
    kernels = m.predict_kernels(x)
    assert kernels.shape == (1, 25, 4, 4)
    assert torch.allclose(kernels.sum(1), torch.ones(1, 4, 4), atol=1e-6)  # softmax-normalised
    assert torch.allclose(m(x), reassemble_naive(x, kernels, 5, 4), atol=1e-5)


def test_paper_shapes_and_constant_interior():
    torch.manual_seed(1)
    m = CARAFEDownsample(channels=256, factor=4, kernel_size=5, encoder_kernel=3, compressed=64)
    out = m(torch.randn(1, 256, 32, 32))
    assert out.shape == (1, 256, 8, 8)  # Sec. 4.3: 256 x 8 x 8 prototypes
    const = m(torch.full((1, 256, 32, 32), 3.0))
    # kernels sum to one: windows fully inside the map reproduce a constant
    assert torch.allclose(const[..., 1:, 1:], torch.full_like(const[..., 1:, 1:], 3.0), atol=1e-5)


def test_gradients_reach_kernel_predictor():
    torch.manual_seed(2)
    m = CARAFEDownsample(channels=8, factor=4, kernel_size=5, encoder_kernel=3, compressed=4)
    m(torch.randn(1, 8, 16, 16)).pow(2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
