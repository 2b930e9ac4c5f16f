"""Many runs: ``compare``, ``sweep``, ``reproduce``, the Lottery Ticket pipeline and the launchers
(in-process, a local pool, SLURM through submitit)."""
