"""CARAFE++ downsampling (Eq. 14) against a naive loop."""

from __future__ import annotations

import pytest
import torch

from crapnet_core.models.carafe import CARAFEDownsample, reassemble, reassemble_naive


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


# ---------------------------------------------------------------- aligned window (model.carafe_window)
@pytest.mark.parametrize("h,w,factor", [(16, 16, 4), (12, 12, 2), (10, 9, 4), (7, 5, 2), (6, 6, 1), (9, 9, 3)])
def test_aligned_reassemble_matches_naive(h, w, factor):
    g = torch.Generator().manual_seed(h * 10 + w + factor)
    x = torch.randn(2, 3, h, w, generator=g)
    ho, wo = -(-h // factor), -(-w // factor)
    kernels = torch.softmax(torch.randn(2, factor * factor, ho, wo, generator=g), dim=1)
    fast = reassemble(x, kernels, factor, factor, window="aligned")
    slow = reassemble_naive(x, kernels, factor, factor, window="aligned")
    assert fast.shape == (2, 3, ho, wo)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_aligned_window_reads_only_its_cell():
    # a feature map that is 1 inside cell (1, 1) of a 4 x 4 grid (sigma 4) and 0 elsewhere:
    # aligned, only prototype (1, 1) sees it; centred (k = 5, rows 4h'-1..4h'+3), prototype
    # (1, 1) also reads row/column 8 of cell 2 and prototypes (2, *) / (*, 2) read row/column 7
    x = torch.zeros(1, 1, 16, 16)
    x[..., 4:8, 4:8] = 1.0
    k_al = torch.full((1, 16, 4, 4), 1 / 16)
    al = reassemble(x, k_al, 4, 4, window="aligned")[0, 0]
    expected = torch.zeros(4, 4)
    expected[1, 1] = 1.0
    assert torch.allclose(al, expected)
    k_c = torch.full((1, 25, 4, 4), 1 / 25)
    ce = reassemble(x, k_c, 5, 4, window="centred")[0, 0]
    assert ce[1, 1] == pytest.approx(16 / 25)  # 9 of the 25 taps lie outside the cell
    assert ce[2, 1] == pytest.approx(4 / 25) and ce[1, 2] == pytest.approx(4 / 25)
    assert ce[2, 2] == pytest.approx(1 / 25) and ce[0, 1] == 0


def test_aligned_module_and_window_validation():
    torch.manual_seed(3)
    m = CARAFEDownsample(channels=8, factor=2, kernel_size=5, encoder_kernel=3, compressed=4, window="aligned")
    assert m.kernel_size == 2  # k = sigma
    x = torch.randn(1, 8, 12, 12)
    kernels = m.predict_kernels(x)
    assert kernels.shape == (1, 4, 6, 6)
    assert torch.allclose(m(x), reassemble_naive(x, kernels, 2, 2, window="aligned"), atol=1e-5)
    with pytest.raises(ValueError, match="window"):
        CARAFEDownsample(channels=8, factor=2, window="shifted")
    with pytest.raises(ValueError, match="must equal the factor"):
        reassemble(x, torch.ones(1, 9, 6, 6) / 9, 3, 2, window="aligned")


@pytest.mark.parametrize(
    "window,k,factor", [("centred", 5, 2), ("centred", 5, 4), ("aligned", 4, 4), ("centred", 3, 1)]
)
def test_tap_and_unfold_forms_agree_in_values_and_gradients(window, k, factor):
    """The CPU form (sum over taps, hand-written backward) and the unfold form give the same values and gradients."""
    g = torch.Generator().manual_seed(k * 10 + factor)
    x = torch.randn(2, 6, 11, 10, generator=g, requires_grad=True)
    ho, wo = -(-11 // factor), -(-10 // factor)
    kernels = torch.softmax(torch.randn(2, k * k, ho, wo, generator=g), dim=1).requires_grad_(True)
    up = torch.randn(2, 6, ho, wo, generator=g)
    results = []
    for by_taps in (True, False):
        out = reassemble(x, kernels, k, factor, window=window, by_taps=by_taps)
        gx, gk = torch.autograd.grad((out * up).sum(), (x, kernels))
        results.append((out.detach(), gx, gk))
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    assert torch.allclose(results[0][0], reassemble_naive(x.detach(), kernels.detach(), k, factor, window), atol=1e-5)
