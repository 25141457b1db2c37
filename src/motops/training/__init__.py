"""Training code (ReID losses, samplers and the training loop). The edge runtime never imports it."""
