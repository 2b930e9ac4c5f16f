"""One training run. ``loop.py`` reads top to bottom; each thing it calls has one module:

setup.py       data, model, plan, optimizer and engine, built in the order that fixes the random draws
resume.py      open the run folder: refuse, continue (repairing derived files) or start fresh
checkpoint.py  what a checkpoint holds and how it is restored
steppers.py    one step behind one interface (eager; compiled.py: torch.compile and CUDA graph)
epoch.py       an epoch's batches, running sums, metrics row, evaluation and logging
guard.py       stop at the first non-finite loss, naming its step
summary.py     summary.json
distributed.py the Platform: one process, or one rank of a torchrun job
loggers.py     TensorBoard / W&B mirrors of the run folder
"""
