"""Running a system on the host: the training loop, its runners and evaluation, checkpoints
read back into learners, and what a run needs around them (preemption, memory, non-finite checks)."""
