"""Training: trainer (train() and the loop), loop (one update), initialization, datasets, sampling, state, optim, validation, reporter, figures."""
