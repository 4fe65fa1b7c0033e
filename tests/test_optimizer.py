"""The training optimiser (Sec. 4.3): fused SGD on CPU changes nothing but the speed."""

from __future__ import annotations

import torch

from crapnet_core.engine.experiment import make_config
from crapnet_core.engine.training import build_model, make_optimizer


def test_fused_sgd_on_cpu_is_bit_identical():
    cfg = make_config("smoke", "phantom", 1, 0, "crapnet")
    model = build_model(cfg)
    opt, _ = make_optimizer(cfg, model)
    assert opt.param_groups[0].get("fused") is True  # the CPU path takes the fused kernel
    reference = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    loop = torch.optim.SGD(
        reference, lr=cfg.train.lr, momentum=cfg.train.momentum, weight_decay=cfg.train.weight_decay, foreach=False
    )
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        for p, q in zip(model.parameters(), reference):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        opt.step()
        loop.step()
    for p, q in zip(model.parameters(), reference):
        assert torch.equal(p.detach(), q.detach())
    assert torch.equal(
        opt.state[next(model.parameters())]["momentum_buffer"], loop.state[reference[0]]["momentum_buffer"]
    )
