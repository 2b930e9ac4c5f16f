"""One training run: the loop, its steppers (eager, compiled, CUDA graph), resume, the divergence
guard, distributed data parallelism and loggers."""
