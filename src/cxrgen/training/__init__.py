"""Training: `fit` (Lightning module, data module, callbacks, resume), the CLIP-based loss hooks, the
chest X-ray CLIP's own training, and multi-seed experiments. Nothing below this layer imports it."""
