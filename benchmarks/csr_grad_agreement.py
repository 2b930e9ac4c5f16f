"""How far ``train --backend csr``'s weight gradients are from ``masked``'s on a whole network, and how
many of RigL's grown weights that changes at one update.

One batch through a randomly masked model (uniform sparsity) under both backends, dense weight
gradients (as on a RigL update step); per layer: the relative error of the gradient (max |diff| over
max |g|), and how many of the top-k inactive weights by |gradient| (k = 30 % of the active count, RigL's
default drop fraction) differ between the two; and, as the yardstick, each backend's error against the
same masked network computed in float64. ``--bn train`` normalises with the batch's statistics, as
training does; ``--bn eval`` with the running ones. Run ``python benchmarks/csr_grad_agreement.py --help``.
"""

from __future__ import annotations

import argparse
import copy
import sys

import timm
import torch
from torch import nn

import dstbench.models  # noqa: F401  (registers the CIFAR models)
from dstbench.core.needs import Needs
from dstbench.speed.training import attach


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cifar_vgg19")
    parser.add_argument("--sparsity", type=float, default=0.98)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--bn", choices=("train", "eval"), default="train")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    masked = timm.create_model(args.model, num_classes=10).train(args.bn == "train")
    for module in masked.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            mask = torch.rand_like(module.weight) >= args.sparsity
            with torch.no_grad():
                module.weight.mul_(mask)
            module.register_buffer("weight_mask", mask)
    exact = copy.deepcopy(masked).double()
    csr = copy.deepcopy(masked)
    kernels = attach(csr, "csr", torch.device("cpu"))
    assert kernels is not None
    kernels.before_step(Needs(dense_grad="update_steps"), update_due=True)
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    for net in (masked, csr):
        nn.functional.cross_entropy(net(x), y).backward()
    nn.functional.cross_entropy(exact(x.double()), y).backward()
    print(f"# {args.model} at {args.sparsity:g}, batch {args.batch}, BatchNorm in {args.bn} mode")
    for (name, a), (_, b), (_, e) in zip(masked.named_modules(), csr.named_modules(), exact.named_modules()):
        if not hasattr(a, "weight_mask"):
            continue
        ga, gb = a.weight.grad.abs().flatten(), b.weight.grad.abs().flatten()
        inactive = ~a.weight_mask.flatten()
        k = int(0.3 * int(a.weight_mask.sum()))
        picks = [set(torch.topk(torch.where(inactive, g, -1.0), k).indices.tolist()) for g in (ga, gb)]
        ge = e.weight.grad.abs().flatten()
        error, to_masked, to_csr = (float((u - v).abs().max() / v.max()) for u, v in ((gb, ga), (ga, ge), (gb, ge)))
        print(f"{name:12s} csr vs masked {error:.1e}  vs float64: masked {to_masked:.1e} csr {to_csr:.1e}  "
              f"grown {k:6d}  picked differently {len(picks[0] - picks[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
