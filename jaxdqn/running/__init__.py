"""Running a system on the host: the training loop, its runners and evaluation, and what a run
needs around them (devices and processes, preemption, a dead peer, memory, non-finite checks)."""
