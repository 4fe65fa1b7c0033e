"""crapnet_core/models/_torchvision.py: the one import path for torchvision."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import torch

import crapnet_core.models._torchvision as tvc


def test_import_gives_torchvision_module():
    import torchvision  # after the work-around, a plain import returns the same module

    assert tvc.torchvision is torchvision
    assert isinstance(tvc.torchvision.__version__, str) and tvc.torchvision.__version__
    assert tvc.segmentation_models().__name__ == "torchvision.models.segmentation"
    assert tvc.classification_models().__name__ == "torchvision.models"


def test_builders_work_with_random_init():
    torch.manual_seed(0)
    resnet = tvc.classification_models().resnet18(weights=None, num_classes=7).eval()
    assert resnet(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    seg = tvc.segmentation_models().deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=3)
    seg.eval()
    with torch.no_grad():
        out = seg(torch.randn(1, 3, 64, 64))["out"]
    assert out.shape == (1, 3, 64, 64)


def test_compiled_op_fails_clearly_or_works():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    if tvc.COMPILED_OPS_MISSING:
        with pytest.raises(RuntimeError, match="Couldn't load custom C\\+\\+ ops"):
            tvc.torchvision.ops.nms(boxes, scores, 0.5)
    else:
        keep = tvc.torchvision.ops.nms(boxes, scores, 0.5)
        assert keep.tolist() == [0, 2]


def test_reimport_is_idempotent():
    flag, lib, mod = tvc.COMPILED_OPS_MISSING, tvc._library, tvc.torchvision
    again = importlib.reload(tvc)
    assert again.torchvision is mod
    assert again.COMPILED_OPS_MISSING == flag
    assert again._library is lib  # schemas stay registered
    # the models still build after the reload
    assert again.classification_models().resnet18(weights=None) is not None


def test_fresh_interpreter_import_twice():
    code = (
        "import importlib, crapnet_core.models._torchvision as a; import torchvision;"
        "b = importlib.reload(a); assert b.torchvision is torchvision;"
        "from torchvision.models.segmentation import deeplabv3_resnet101;"
        "print('ok', a.COMPILED_OPS_MISSING)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok")
