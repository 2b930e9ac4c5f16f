"""Every check a run makes before its first step, made without its data: what a grid calls for each
of its cells before the first one trains.

A grid (``compare``, ``sweep``, ``reproduce``) that stops in its middle on a check it could have made at
the start wastes every hour before it (issue 20: a plugin's "the last pruning update is not before the
end of training" after 19 runs). The checks that depend on the run's length live where the run is
built (:func:`dstbench.train.setup.check_schedule`, the methods' ``setup``), so this module builds
the same parts in the same way, with two differences: the steps per epoch come from the dataset's
known size and the batch size (:attr:`dstbench.data.DatasetInfo.sizes`; the synthetic set's sizes are
in the config), and the model is built on the ``meta`` device (shapes only: no memory, no
initialisation). A dataset whose size only its files tell (``imagefolder``) gets the checks of the
arguments alone, and the rest when its run starts; so does a method whose ``setup`` reads weight
values (a meta tensor has none): only its one-line errors (``DstbenchError``) count here.
"""

from __future__ import annotations

import logging
import math

import torch

from dstbench.config import TrainConfig
from dstbench.core.errors import DstbenchError
from dstbench.engine.sparse_engine import SparseEngine
from dstbench.runs.tickets import method_inputs
from dstbench.train.distributed import Platform, resolve_device
from dstbench.train.optimizers import build_optimizer
from dstbench.train.setup import (
    build_model,
    check_arguments,
    check_schedule,
    check_subset_sizes,
    data_config,
    model_options,
    plan_of,
)

__all__ = ["preflight", "known_sizes"]
log = logging.getLogger(__name__)


def known_sizes(cfg: TrainConfig) -> tuple[int, int, int] | None:
    """(training images, test images, classes) of the run's dataset before any file is read; None
    when only the files say."""
    from dstbench.data import dataset_info

    info = dataset_info(cfg.dataset)
    if cfg.dataset == "synthetic":
        return cfg.synthetic_train_samples, cfg.synthetic_test_samples, data_config(cfg).synthetic_num_classes
    if info.sizes is None or info.classes is None:
        return None
    return info.sizes[0], info.sizes[1], len(info.classes)


def preflight(cfg: TrainConfig) -> None:
    """Raise the one-line error the run ``cfg`` would stop with before its first step, if any."""
    cfg.validate()
    updater = check_arguments(cfg, Platform(resolve_device(cfg.device)))
    sizes = known_sizes(cfg)
    if sizes is None:
        return
    train_samples, test_samples, classes = sizes
    check_subset_sizes(cfg, train_samples, test_samples)
    batches = math.ceil(min(train_samples, cfg.max_train_samples or train_samples) / cfg.batch_size)
    steps_per_epoch = math.ceil(batches / cfg.grad_accum)
    check_schedule(cfg, steps_per_epoch)
    try:
        with torch.device("meta"):
            model = build_model(cfg.model, classes, {**cfg.model_kwargs, **model_options(cfg, updater, classes)})
            # The engine sets the method up (its ``setup`` sees the run's layers, plan, optimizer and length).
            SparseEngine(
                model, plan_of(cfg, model, updater), updater, build_optimizer(model, cfg), seed=cfg.seed,
                steps_per_epoch=steps_per_epoch, total_epochs=cfg.epochs, inputs=method_inputs(updater),
            )  # fmt: skip
    except DstbenchError:
        raise
    except Exception as exc:  # a setup that reads weight values cannot run on meta tensors
        # Not an error of the run: its own setup makes these checks again, on real weights, when it starts.
        log.debug("%s: setup not checked ahead on the meta device (%s)", cfg.out, exc)
