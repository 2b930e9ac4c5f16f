"""The BiDST paper's published accuracies, shipped as package data, and how our cells match them.

``paper_results.csv`` (beside this module) transcribes Tables 1, 2, B.1, B.2 and B.3 of

    Jie Ji, Gen Li, Lu Yin, Minghai Qin, Geng Yuan, Linke Guo, Shiwei Liu, Xiaolong Ma.
    "Advancing Dynamic Sparse Training by Exploring Optimization Opportunities". ICML 2024, PMLR 235.

one line per (table, method, schedule variant, model, dataset, distribution, sparsity), with the
accuracy and the table's dense accuracy as printed (in %). Where the printed table is inconsistent
(Table B.2 prints one CIFAR-100 sparsity twice and one row twice) the ``note`` column says so.

``report --paper`` compares *gaps to dense*, not raw accuracies: a 2-epoch CPU run is far below the
paper's 160-epoch numbers, but whether a sparse method loses 1 or 5 points against dense training
under the same schedule is the part that transfers across schedules and hardware.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

__all__ = ["PaperResult", "CITATION", "paper_results", "paper_matches", "MODELS", "DATASETS"]

CITATION = (
    "Ji, Li, Yin, Qin, Yuan, Guo, Liu, Ma. Advancing Dynamic Sparse Training by Exploring Optimization "
    "Opportunities (BiDST). ICML 2024, PMLR 235"
)

MODELS: dict[str, tuple[str, ...]] = {
    "ResNet-32": ("cifar_resnet32", "cifar_resnet32_grasp"),
    "VGG-19": ("cifar_vgg19",),
    "MobileNet-v2": ("cifar_mobilenetv2",),
    "ResNet-50": ("resnet50",),
    "ResNet-34": ("resnet34",),
}
"""The paper's model names and the dstbench/timm models that implement them. ResNet-32 covers both
the He et al. network and the wider GraSP/MEST one the paper's code trains."""

DATASETS: dict[str, tuple[str, ...]] = {
    "CIFAR-10": ("cifar10",),
    "CIFAR-100": ("cifar100",),
    "ImageNet-1K": ("imagenet", "imagefolder"),
}
"""The paper's datasets and dstbench's names (ImageNet is read through ``imagefolder``)."""


@dataclass(frozen=True)
class PaperResult:
    """One published number (accuracies in %, as printed)."""

    table: str
    paper_name: str
    method: str
    variant: str
    model: str
    dataset: str
    distribution: str
    sparsity: float
    accuracy: float
    std: float | None
    dense_accuracy: float
    note: str

    @property
    def gap(self) -> float:
        """Sparse minus dense accuracy, in points (negative: the sparse network is worse)."""
        return self.accuracy - self.dense_accuracy


@lru_cache(maxsize=1)
def paper_results() -> tuple[PaperResult, ...]:
    """Every transcribed row, in the paper's order."""
    text = resources.files(__package__).joinpath("paper_results.csv").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    rows = []
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        rows.append(
            PaperResult(
                table=row["table"],
                paper_name=row["paper_name"],
                method=row["method"],
                variant=row["variant"],
                model=row["model"],
                dataset=row["dataset"],
                distribution=row["distribution"],
                sparsity=float(row["sparsity"]),
                accuracy=float(row["accuracy"]),
                std=float(row["std"]) if row["std"] else None,
                dense_accuracy=float(row["dense_accuracy"]),
                note=row["note"],
            )
        )
    return tuple(rows)


def paper_matches(method: str, model: str | None, dataset: str | None, distribution: str, sparsity: float) -> list[PaperResult]:
    """The paper's 1x-schedule numbers for one of our cells (any table; usually zero or one)."""
    return [
        r
        for r in paper_results()
        if r.method == method
        and r.variant == ""
        and model in MODELS.get(r.model, ())
        and dataset in DATASETS.get(r.dataset, ())
        and r.distribution == distribution
        and abs(r.sparsity - sparsity) < 1e-9
    ]
