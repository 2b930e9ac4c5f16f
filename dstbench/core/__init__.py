"""The method contract, in the papers' vocabulary: everything a method file imports.

``MaskUpdater`` and ``Needs`` (what a method decides and declares), ``StepInfo`` and the schedules (when),
the selection kernels (which weights), the sparsity plan (how many per layer), hyper-parameter ranges
and the registry. Nothing here knows about training loops, run folders or the command line, so a method
that imports only :mod:`dstbench.core` cannot depend on them.

The names below are imported on first use (PEP 562): ``dstbench.core.errors`` and
``dstbench.core.hparams`` stay importable without torch (``dstbench --help``).
"""
