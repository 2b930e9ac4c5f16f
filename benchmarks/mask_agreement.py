"""Do two devices make the same mask update from the same inputs? One line per method.

    python benchmarks/mask_agreement.py --b cuda                    # CPU against the GPU, every built-in method
    python benchmarks/mask_agreement.py --b-threads 2 --methods rigl,set   # CPU 1 thread against 2 threads

Each method's state (weights, masks, its own scores, optimizer state) and gradients are built once on
the CPU and loaded on both sides, then one mask update runs on each (:mod:`dstbench.speed.agreement`).
The masks must be identical except at exact ties, which are counted; any other difference is a
failure (exit code 1). ``benchmarks/gpu_check.py`` runs this check.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from dstbench.core.errors import DstbenchError
from dstbench.core.registry import get_method, list_methods
from dstbench.speed.agreement import Agreement, Side, check_agreement

__all__ = ["builtin_methods", "check_methods", "main"]


def builtin_methods() -> list[str]:
    """The methods shipped with dstbench (installed plugins are left out)."""
    return [name for name in list_methods() if get_method(name).__module__.startswith("dstbench.methods")]


def check_methods(methods: Sequence[str], a: Side, b: Side, *, model: str = "tiny_cnn") -> dict[str, Agreement | str]:
    """Each method's :class:`Agreement`, or why it was not checked; prints one line per method."""
    results: dict[str, Agreement | str] = {}
    for method in methods:
        try:
            result: Agreement | str | None = check_agreement(method, a, b, model=model)
        except DstbenchError as exc:
            result = f"not checked: {exc}"
        results[method] = "no mask update after initialisation: nothing to compare" if result is None else result
        shown = results[method]
        print(f"  {method:10s} {shown if isinstance(shown, str) else shown.line()}")
    return results


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise argparse.ArgumentTypeError(f"not a floating dtype: {name!r}")
    return dtype


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--methods", help="comma-separated (default: every built-in method)")
    parser.add_argument("--a", default="cpu", help="first device (default cpu)")
    parser.add_argument("--b", default="cpu", help="second device (default cpu; cuda for the GPU)")
    parser.add_argument("--b-dtype", type=_dtype, default=torch.float32, help="second side's dtype (default float32)")
    parser.add_argument("--b-threads", type=int, default=1, help="second side's CPU threads (default 1)")
    parser.add_argument("--model", default="tiny_cnn")
    args = parser.parse_args(argv)
    if "cuda" in (args.a + args.b) and not torch.cuda.is_available():
        print("mask_agreement: error: no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    methods = args.methods.split(",") if args.methods else builtin_methods()
    a, b = Side(args.a), Side(args.b, args.b_dtype, args.b_threads)
    print(f"one mask update per method, {a.label()} against {b.label()}, model {args.model}:")
    try:
        results = check_methods(methods, a, b, model=args.model)
    except DstbenchError as exc:
        print(f"mask_agreement: error: {exc}", file=sys.stderr)
        return 2
    failed = [name for name, result in results.items() if isinstance(result, Agreement) and not result.ok]
    print("mask_agreement: " + (f"FAILED: {', '.join(failed)}" if failed else "every checked method agrees"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
