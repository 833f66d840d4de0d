"""Training a dual encoder: its settings, the trainer's steps, its
callbacks and distribution, fine-tuning, the feature cache, resume checks,
and the run folder they write."""
