"""Reading finished runs: plots, rliable reports over seeds and tasks, and episode GIFs."""
