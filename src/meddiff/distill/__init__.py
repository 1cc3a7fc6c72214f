"""Few-step students of a trained DDPM (``objective: distill``): the teacher's deterministic sampler
distilled into one network call (its objective: meddiff.objectives.distill), from targets the teacher computes once (targets.py).
Students are sampled with `meddiff.samplers.student`."""
