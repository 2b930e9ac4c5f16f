"""Analysis of finished runs: FLOP accounting, mask IoU and ITOP rate, sparsity sweeps, figures, tables.

Everything here works from run directories (``config.json``, ``plan.json``, ``topology.jsonl``, the
bit-packed mask snapshots and ``summary.json``), so it never needs to re-train or even load a
checkpoint. The one exception is :mod:`.flops`, which runs a single forward pass to read the real
conv/linear output shapes of a model.

Modules (imported on demand; matplotlib is loaded only by :mod:`.plots` and :mod:`.ablation`, scipy only by
:mod:`.stats` when it computes):

* :mod:`.flops`: forward FLOPs per layer, and training FLOPs from a method's declared ``Needs``;
* :mod:`.runs`: reading run directories and folders of runs (configs of any version, through
  :mod:`dstbench.runs.configs`);
* :mod:`.topology`: IoU between consecutive updates and at a fixed interval, ITOP rate from snapshots;
* :mod:`.report`: the rows of the BiDST Table 1/2 shaped tables, grouped by every setting, and
  ``report.md``/``report.csv``;
* :mod:`.tables`: those rows formatted (Markdown and CSV);
* :mod:`.stats`: confidence intervals and Welch's test across seeds (scipy);
* :mod:`.paper`: the BiDST paper's published accuracies (``paper_results.csv``);
* :mod:`.ablation`: accuracy against a swept hyper-parameter (Figure C.1);
* :mod:`.plots`: Figures 3, 4 and 5 analogues.

Training grids (``compare``, ``sweep``, ``reproduce``) live in :mod:`dstbench.grid` and the
subcommands in :mod:`dstbench.cli`; this package never imports either.
"""
