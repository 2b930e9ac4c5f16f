"""``dstbench flops``: the FLOP accountant from the command line (forward, per-layer and, with
``--method``, a training run's predicted total), on the model as training builds it."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, get_args

from dstbench.cli.options import Choice
from dstbench.core.distributions import DenseProfile, Distribution
from dstbench.core.errors import ConfigError
from dstbench.core.hparams import parse_hp_assignments
from dstbench.core.model_kwargs import parse_model_kwargs, to_timm
from dstbench.core.structures import STRUCTURE_FORMS
from dstbench.core.validation import NON_NEGATIVE_INT, POSITIVE_INT, SPARSITY

if TYPE_CHECKING:
    from torch import nn

__all__ = ["add_flops"]


def add_flops(sub: Any) -> None:
    flops = sub.add_parser("flops", help="forward, inference and training FLOPs of a model (RigL App. H)")
    add = flops.add_argument
    add("--model", required=True, help="timm model name, e.g. resnet50 or cifar_resnet32")
    add("--input-size", type=POSITIVE_INT, required=True, help="input height = width, e.g. 224 or 32")
    add("--model-kwargs", default="", metavar="NAME=VALUE,...", help="arguments of timm.create_model, as train takes them")
    add("--num-classes", type=POSITIVE_INT, help="classifier outputs (default: the model's own default head)")
    add("--sparsity", type=SPARSITY, default=0.0, help="target sparsity in [0, 1); 0 is dense")
    add("--distribution", type=Choice(get_args(Distribution)), choices=get_args(Distribution), default="uniform",
        help="how sparsity is spread over layers")  # fmt: skip
    add("--dense-layers", type=Choice(get_args(DenseProfile)), choices=get_args(DenseProfile), default="none",
        help="layers kept dense")  # fmt: skip
    add("--min-active", type=NON_NEGATIVE_INT, default=1, help="minimum active weights per layer")
    add("--structure", help=f"mask structure: {STRUCTURE_FORMS} (default: the method's own, else unstructured)")
    add("--method", help="mask updater whose training FLOPs to count (needs --epochs and --train-samples)")
    add("--epochs", type=POSITIVE_INT, help="training epochs (needed with --method)")
    add("--train-samples", type=POSITIVE_INT, help="N_train, samples per epoch, e.g. 1281167 for ImageNet (needed with --method)")
    add("--batch-size", type=POSITIVE_INT, default=128, help="samples per step; sets how often schedules fire")
    add("--hp", action="append", default=[], metavar="NAME=VALUE",
        help="method hyper-parameter (repeatable; default: the method's own)")  # fmt: skip
    add("--json", action="store_true", help="print JSON instead of a table")
    flops.set_defaults(func=_cmd_flops)


def _build_model(name: str, num_classes: int | None, kwargs: dict[str, Any], input_size: int) -> nn.Module:
    """The model as training builds it; without ``num_classes``, with the model's own default head. A
    model that cannot take ``input_size`` images is one line, as in training."""
    import timm

    import dstbench.models  # noqa: F401  (registers the CIFAR backbones)
    from dstbench.train.backbone import build_model, check_model, check_model_name

    check_model_name(name)  # the one place unknown names are reported
    check_model(name, kwargs, num_classes or 1000, input_size)  # the head's width does not change what fits
    if num_classes is not None:
        return build_model(name, num_classes, kwargs)
    model: nn.Module = timm.create_model(name, **to_timm(kwargs))
    return model


def _narrowed_model(args: argparse.Namespace, updater: Any, num_classes: int) -> nn.Module:
    from dstbench.train.narrow import check_narrowable, narrow_for
    from dstbench.train.backbone import build_model

    check_narrowable(args.model, args.method)
    narrowing = narrow_for(args.model, num_classes, args.sparsity, args.distribution, args.dense_layers, args.min_active)
    updater.narrowed(narrowing.record())
    kwargs = {**parse_model_kwargs(args.model_kwargs), "channel_multiplier": narrowing.channel_multiplier}
    return build_model(args.model, num_classes, kwargs)


def _check_flops_args(args: argparse.Namespace) -> None:
    if args.input_size < 1:
        raise ConfigError(f"--input-size must be >= 1, got {args.input_size}")
    if args.method is None:
        if args.hp or args.epochs is not None or args.train_samples is not None:
            raise ConfigError("--hp, --epochs and --train-samples describe training: give --method too")
        return
    if args.epochs is None or args.train_samples is None:
        raise ConfigError("--method needs --epochs and --train-samples to count training FLOPs")
    for name in ("epochs", "train_samples", "batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")


def _cmd_flops(args: argparse.Namespace) -> int:
    from dstbench.core.distributions import plan_sparsity
    from dstbench.core.layers import describe_layers
    from dstbench.core.registry import create_updater

    from dstbench.engine.cost import count_forward_flops, forward_report, plan_active, predict_flops, realisable_densities
    from dstbench.runs.tickets import method_inputs
    from dstbench.train.narrow import full_width_flops

    _check_flops_args(args)
    updater = create_updater(args.method, parse_hp_assignments(args.hp)) if args.method else None
    model = _build_model(args.model, args.num_classes, parse_model_kwargs(args.model_kwargs), args.input_size)
    if updater is not None and updater.narrows_model:  # small-dense: the narrowed network, as training builds it
        model = _narrowed_model(args, updater, int(getattr(model, "num_classes", args.num_classes or 1000)))
    sparsity = args.sparsity if updater is None or updater.needs.sparse else 0.0
    layers = describe_layers(model)
    structure = args.structure or (updater.default_structure if updater is not None else "unstructured")
    plan = plan_sparsity(layers, sparsity, args.distribution, args.dense_layers, min_active=args.min_active, structure=structure)
    forward = count_forward_flops(model, args.input_size)
    result: dict[str, Any] = {
        "model": args.model,
        "input_size": args.input_size,
        "num_classes": getattr(model, "num_classes", args.num_classes),
        "sparsity": plan.sparsity,
        "distribution": plan.distribution,
        "dense_layers": plan.dense_layers,
        "structure": plan.structure,
    }
    if updater is None:
        result.update(forward_report(forward, plan_active(plan), realisable_densities(plan, plan_active(plan))))
    else:
        result.update(
            method=args.method, epochs=args.epochs, train_samples=args.train_samples, batch_size=args.batch_size
        )
        result.update(
            predict_flops(
                forward,
                model,
                plan,
                updater,
                epochs=args.epochs,
                train_samples=args.train_samples,
                batch_size=args.batch_size,
                input_size=args.input_size,
                inputs=method_inputs(updater),
            )
        )
        if updater.narrows_model:  # small-dense: "x dense" against the full-width network, as a run reports it
            result.update(full_width_flops(result, args.model, int(result["num_classes"]), args.input_size))
    print(json.dumps(result, indent=2) if args.json else _render_flops(result))
    return 0


def _render_flops(result: dict[str, Any]) -> str:
    lines = [
        f"{result['model']} at {result['input_size']}x{result['input_size']}, sparsity {result['sparsity']:g} "
        f"({result['distribution']}, dense layers: {result['dense_layers']})",
        f"{'layer':40s} {'dense FLOPs':>14s} {'density':>9s} {'sparse FLOPs':>14s}",
    ]
    for name, layer in result["layers"].items():
        lines.append(f"{name:40s} {layer['dense_flops']:14.4g} {layer['density']:9.4f} {layer['sparse_flops']:14.4g}")
    lines.append(
        f"forward FLOPs per sample: dense {result['dense_forward_flops']:.4g}, "
        f"sparse {result['sparse_forward_flops']:.4g}, realisable with {result['structure']} kernels "
        f"{result['realisable_forward_flops']:.4g}"
    )
    if "train_flops" in result:
        lines.append(
            f"training FLOPs ({result['method']}, {result['epochs']} epochs x {result['train_samples']} samples, "
            f"{result['mask_updates']} mask updates): {result['train_flops']:.4g} = "
            f"{result['train_flops_relative']:.4f} x dense ({result['dense_train_flops']:.4g})"
        )
        if result["density_policy"] == "scheduled_global":
            lines.append(
                f"note: {result['method']}'s total follows its schedule, but global pruning splits it across layers "
                "during training; this spreads it like the plan (a run's summary.json integrates the real split)"
            )
        elif result["density_policy"] not in ("exact", "scheduled") and result["mask_updates"]:
            lines.append(
                f"note: {result['method']}'s layer counts change during training; this assumes its initial masks "
                "throughout (a run's summary.json integrates the real timeline)"
            )
    return "\n".join(lines)
