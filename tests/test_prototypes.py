"""Prototypes (Eq. 14-15, the 0.95 rule, fallbacks) and the similarity classifier (Eq. 16-17)."""

from __future__ import annotations

import math

import pytest
import torch

from crapnet_core.models.prototypes import PrototypeClassifier, class_score, local_prototypes, masked_average, pool_mask


def test_pool_mask_fractions():
    m = torch.zeros(1, 8, 8)
    m[0, :4, :4] = 1
    m[0, 4:, 4:6] = 1
    p = pool_mask(m, (2, 2))
    assert p[0].tolist() == [[1.0, 0.0], [0.0, 0.5]]


def test_masked_average_eq15():
    torch.manual_seed(0)
    f = torch.randn(2, 3, 4, 4)
    m = torch.zeros(2, 8, 8)
    m[0, :2, :2] = 1  # feature pixel (0, 0) only
    m[1, :, 4:] = 1  # right half
    p = masked_average(f, m)
    assert torch.allclose(p[0], f[0, :, 0, 0], atol=1e-4)
    assert torch.allclose(p[1], f[1, :, :, 2:].mean(dim=(1, 2)), atol=1e-4)
    assert torch.equal(masked_average(f, torch.zeros(2, 8, 8)), torch.zeros(2, 3))  # empty mask


def test_threshold_rule():
    grid = torch.randn(1, 4, 2, 2)
    fg = torch.zeros(1, 20, 20)
    fg[0, :10, :10] = 1  # cell (0,0): 100 % foreground
    fg[0, :10, 10:] = 1
    fg[0, 0, 10:15] = 0  # cell (0,1): 95 % foreground -> not strictly above 0.95
    fg[0, 10, 10:14] = 1  # cell (1,1): 4 % foreground -> 96 % background
    bg = 1 - fg
    protos, fg_ok, bg_ok = local_prototypes(grid, fg, bg, 0.95)
    assert protos.shape == (1, 4, 4)
    assert torch.equal(protos[0, 3], grid[0, :, 1, 1])
    assert fg_ok[0].tolist() == [True, False, False, False]
    assert bg_ok[0].tolist() == [False, False, True, True]


def test_class_score_direct_computation():
    protos = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, -3.0]]])  # (1, K=3, C=2)
    valid = torch.tensor([[True, True, False]])
    q = torch.tensor([[3.0, 0.0], [0.0, 2.0]]).t().reshape(1, 2, 1, 2)  # pixels (3,0) and (0,2)
    alpha = 20.0
    got = class_score(protos, valid, q, alpha)
    expected = []
    for pix in ([3.0, 0.0], [0.0, 2.0]):
        s = []
        for p in ([1.0, 0.0], [1.0, 1.0]):  # the invalid third prototype is excluded
            cos = (p[0] * pix[0] + p[1] * pix[1]) / (math.hypot(*p) * math.hypot(*pix))
            s.append(alpha * cos)
        z = sum(math.exp(v) for v in s)
        expected.append(sum(math.exp(v) / z * v for v in s))
    assert got.shape == (1, 1, 2)
    assert got[0, 0].tolist() == pytest.approx(expected, rel=1e-5)


def test_class_score_without_valid_prototype_is_zero_and_finite():
    protos = torch.randn(1, 2, 3, requires_grad=True)
    q = torch.randn(1, 3, 2, 2)
    out = class_score(protos, torch.zeros(1, 2, dtype=torch.bool), q, 20.0)
    assert torch.equal(out, torch.zeros(1, 2, 2))
    out.sum().backward()
    assert torch.isfinite(protos.grad).all()


def _mask(size=32, box=(8, 24, 8, 24)):
    m = torch.zeros(1, size, size)
    m[0, box[0] : box[1], box[2] : box[3]] = 1
    return m


def test_panet_uses_global_prototypes_only():
    torch.manual_seed(1)
    clf = PrototypeClassifier("panet", channels=4)
    f = torch.randn(1, 4, 8, 8)
    fg = _mask()
    fp, fok, bp, bok = clf.prototypes(f, fg, 1 - fg)
    assert fp.shape == bp.shape == (1, 1, 4) and fok.all() and bok.all()
    assert torch.allclose(fp[0, 0], f[0, :, 2:6, 2:6].mean(dim=(1, 2)), atol=1e-4)


def test_alpnet_pooling_train_vs_eval_and_global_fg():
    torch.manual_seed(2)
    clf = PrototypeClassifier("alpnet", channels=4, pool_train=4, pool_test=2)
    f = torch.randn(1, 4, 32, 32)
    fg = _mask(256, (0, 256, 0, 128))  # left half foreground
    fp, fok, bp, bok = clf.train().prototypes(f, fg, 1 - fg)
    assert fp.shape == (1, 8 * 8 + 1, 4) and fok.sum() == 32 + 1 and bok.sum() == 32
    assert torch.allclose(fp[0, 0], f[0, :, :4, :4].mean(dim=(1, 2)), atol=1e-5)
    fp, fok, bp, bok = clf.eval().prototypes(f, fg, 1 - fg)
    assert fp.shape == (1, 16 * 16 + 1, 4) and fok.sum() == 128 + 1
    assert not bok[0, -1]  # local background exists: no global background fallback


def test_small_organ_and_background_fallbacks():
    torch.manual_seed(3)
    clf = PrototypeClassifier("crapnet", channels=8, carafe_compressed=4)
    f = torch.randn(1, 8, 16, 16)
    fg = _mask(128, (60, 66, 60, 66))  # 6x6 pixels: no cell is 95 % foreground
    fp, fok, bp, bok = clf.prototypes(f, fg, 1 - fg)
    assert fok[0, :-1].sum() == 0 and fok[0, -1]  # global foreground only
    assert bok[0, :-1].sum() == 16 and not bok[0, -1]  # the organ covers < 5 % of any cell
    checker = torch.zeros(1, 128, 128)
    checker[0, ::2] = 1  # 50 % everywhere: no local prototype of either class
    fp, fok, bp, bok = clf.prototypes(f, checker, 1 - checker)
    assert fok[0].tolist() == [False] * 16 + [True] and bok[0].tolist() == [False] * 16 + [True]


@pytest.mark.parametrize("method", ["crapnet", "alpnet", "panet"])
def test_classifier_scores_shape_and_range(method):
    torch.manual_seed(4)
    clf = PrototypeClassifier(method, channels=8, carafe_compressed=4)
    f, q = torch.randn(2, 8, 16, 16), torch.randn(2, 8, 16, 16)
    fg = _mask(128).expand(2, -1, -1)
    s = clf(f, fg, 1 - fg, q)
    assert s.shape == (2, 2, 16, 16) and s.dtype == torch.float32
    assert s.abs().max() <= 20.0 + 1e-4  # a softmax-weighted mean of alpha * cosines
