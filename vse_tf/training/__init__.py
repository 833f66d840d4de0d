"""Training a dual encoder: the trainer's steps, its callbacks, optimizers
and distribution, fine-tuning, the feature cache, resume checks, and the
run folder they write."""
