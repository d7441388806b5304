"""Training: the loop, model initialisation, sampling and run state, the optimiser, and the run's reports."""
