"""Model families. Every model speaks the same few verbs: fit, predict, sample, transform, save, load."""
