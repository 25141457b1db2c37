"""Training code: detector finetuning and its augmentations, ReID losses, samplers and the ReID
training loop. The edge runtime (:mod:`motops.runtime`) never imports it."""
