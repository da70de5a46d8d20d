"""Stage I: data, the architecture distribution (SNG), the training config and the trainer."""
