"""``dstbench inspect``: what a run directory says about its masks, without re-running anything.

Reads the checkpoint (weights and ``weight_mask`` buffers), ``plan.json`` (targets) and
``topology.jsonl``; ``max_abs_pruned`` is the largest |weight| off the mask, which must be exactly 0;
``fan_in_min``/``fan_in_max`` span the active inputs per output neuron (rows of the weight) over the
neurons that have any (SRigL keeps them equal).

Layer collapse is shown, not hidden: a sparsified layer with no active weight is ``collapsed``, and a
layer that a global selection raised to ``min_active`` is ``clamped`` (from the method's selection
report, :mod:`dstbench.core.global_select`). Under ``--distribution global`` the per-layer targets are
placeholders (only the total binds), which the text output says. Under a structure (``plan.json``'s
``structure``) each layer says whether its mask holds it and which layers the structure cannot apply to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dstbench.core.distributions import dense_layer_reasons, realised_sparsity
from dstbench.core.layers import PrunableLayer
from dstbench.core.structured_select import holds_structure
from dstbench.core.structures import parse_structure
from dstbench.runs.rundir import RunDir

__all__ = ["inspect_run", "render_inspection"]


def inspect_run(path: str | Path) -> dict[str, Any]:
    run = RunDir(path)
    plan = run.read_json(run.plan)
    checkpoint = run.load_checkpoint("cpu")
    state = checkpoint["model"]
    summary = run.read_json(run.summary) if run.summary.exists() else None
    selection = _selection(summary, checkpoint)
    clamped = selection.get("clamped_layers", {})
    structure = parse_structure(plan.get("structure", "unstructured"))  # folders before structures: unstructured
    why_dense = _dense_reasons(plan)
    layers = []
    for entry in plan["layers"]:
        weight: torch.Tensor = state[f"{entry['name']}.weight"]
        mask: torch.Tensor = state[f"{entry['name']}.weight_mask"]
        pruned = weight[~mask]
        fan_in = mask.reshape(mask.shape[0], -1).sum(dim=1)
        fan_in = fan_in[fan_in > 0]  # over the output neurons that have any input
        layers.append(
            {
                "name": entry["name"],
                "numel": entry["numel"],
                "active": int(mask.sum()),
                "target_active": entry["target_active"],
                "sparsified": entry["sparsified"],
                "dense_reason": None if entry["sparsified"] else why_dense.get(entry["name"], "sparsity 0"),
                "nonzero": int((weight != 0).sum()),
                "max_abs_pruned": float(pruned.abs().max()) if pruned.numel() else 0.0,
                "collapsed": bool(entry["sparsified"]) and int(mask.sum()) == 0,
                "clamped": entry["name"] in clamped,
                "fan_in_min": int(fan_in.min()) if fan_in.numel() else 0,
                "fan_in_max": int(fan_in.max()) if fan_in.numel() else 0,
                "structured": bool(entry["sparsified"]) and structure.applies(tuple(mask.shape)),
                "holds_structure": holds_structure(mask, structure),
            }
        )
    sparsified = [(layer["numel"], layer["active"]) for layer in layers if layer["sparsified"]]
    updates = [
        {key: record[key] for key in ("step", "epoch", "iou", "grown", "dropped", "seconds")}
        for record in run.read_jsonl(run.topology)
    ]
    summary = run.optional_json(run.summary)
    return {
        "run_dir": str(run.path),
        "distribution": plan.get("distribution"),
        "structure": str(structure),
        "min_active": selection.get("min_active"),
        "complete": summary is not None,
        "epochs_done": len(run.read_jsonl(run.metrics)),
        "test_acc": summary["test_acc"] if summary else None,
        "layers": layers,
        "not_prunable": _not_prunable(state, {entry["name"] for entry in plan["layers"]}),
        "realised_sparsity": realised_sparsity(sparsified, [(layer["numel"], layer["active"]) for layer in layers]),
        "topology_updates": updates,
    }


def _dense_reasons(plan: dict[str, Any]) -> dict[str, str]:
    """Why each dense layer of the plan is dense: its ``--dense-layers`` profile's reason."""
    layers = [PrunableLayer(e["name"], tuple(e["shape"]), e["kind"]) for e in plan["layers"]]
    profile = plan.get("dense_layers") or "none"
    return {name: f"{profile}: {reason}" for name, reason in dense_layer_reasons(layers, profile).items()}


_BUFFERS = ("running_mean", "running_var", "num_batches_tracked", "weight_mask")


def _not_prunable(state: dict[str, torch.Tensor], prunable: set[str]) -> dict[str, Any]:
    """The model's parameters that no method prunes (norms, biases, position embeddings, class token),
    dense by construction: only conv/linear weights are prunable. Buffers are left out."""
    names = [
        key for key in state
        if not key.endswith(_BUFFERS) and not (key.endswith(".weight") and key[: -len(".weight")] in prunable)
    ]  # fmt: skip
    special = [key for key in names if not key.endswith((".weight", ".bias"))]
    return {"tensors": len(names), "values": sum(state[key].numel() for key in names), "other_than_norms_and_biases": special}


def _selection(summary: dict[str, Any] | None, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The method's selection report (scope, clamped layers), from the summary or, mid-run, the
    checkpointed method state; empty for methods that keep none."""
    if summary is not None:
        report = summary.get("method_report") or {}
    else:
        report = (checkpoint.get("engine") or {}).get("updater", {}).get("selection") or {}
    return report if isinstance(report, dict) else {}


def _flags(layer: dict[str, Any], report: dict[str, Any]) -> str:
    """What the table says after a layer's name: dense (and why), collapsed, outside or breaking the
    run's structure, clamped."""
    flag = "" if layer["sparsified"] else f" (dense, {layer['dense_reason']})" if layer.get("dense_reason") else " (dense)"
    if layer.get("collapsed"):
        flag += " (collapsed)"
    if layer["sparsified"] and report.get("structure", "unstructured") != "unstructured" and not layer.get("structured"):
        flag += " (unstructured)"
    if not layer.get("holds_structure", True):
        flag += " (BREAKS THE STRUCTURE)"
    if layer.get("clamped"):
        flag += f" (clamped to min_active {report.get('min_active')})"
    return flag


def render_inspection(report: dict[str, Any]) -> str:
    lines = [f"{report['run_dir']}: {report['epochs_done']} epochs, test_acc {report['test_acc']}"]
    if report.get("structure", "unstructured") != "unstructured":
        lines.append(f"structure {report['structure']}: layers marked (unstructured) cannot take it and keep any mask")
    if report.get("distribution") == "global":
        lines.append("distribution global: the total is the target; per-layer targets are placeholders")
    labels = [layer["name"] + _flags(layer, report) for layer in report["layers"]]
    width = max([40, *map(len, labels)])
    lines.append(f"{'layer':{width}s} {'numel':>10s} {'active':>10s} {'target':>10s} {'max|pruned|':>12s} {'fan-in':>11s}")
    for layer, label in zip(report["layers"], labels):
        lines.append(
            f"{label:{width}s} {layer['numel']:10d} {layer['active']:10d} "
            f"{layer['target_active']:10d} {layer['max_abs_pruned']:12.3g} "
            f"{str(layer['fan_in_min']) + '-' + str(layer['fan_in_max']):>11s}"
        )
    fixed = report.get("not_prunable")
    if fixed:
        extra = "".join(f", {name}" for name in fixed["other_than_norms_and_biases"])
        lines.append(f"not prunable (dense): {fixed['tensors']} tensors, {fixed['values']} values: norms, biases{extra}")
    rs = report["realised_sparsity"]
    lines.append(f"realised sparsity: {rs['sparsified']:.6f} (sparsified layers), {rs['all']:.6f} (all conv+FC)")
    updates = report["topology_updates"]
    lines.append(f"topology updates: {len(updates)}")
    for u in updates:
        lines.append(
            f"  step {u['step']:7d} epoch {u['epoch']:4d} iou {u['iou']:.4f} grown {u['grown']:8d} "
            f"dropped {u['dropped']:8d} {u['seconds'] * 1000:.1f} ms"
        )
    return "\n".join(lines)
