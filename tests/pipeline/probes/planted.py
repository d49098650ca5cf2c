"""A probe fitted on a model's real hidden states to planted pass rates, as an earlier label
version's probe would be: for tests that need one that passes (or fails) its floor."""

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from scipy.special import expit

from pipeline.probes.probe import ProbeReport, fit_probe

TRIALS = 16


def fitted(features: np.ndarray, layers: Sequence[int], label_key: str, created_at: str, signal: bool) -> ProbeReport:
    """Fitted on `features` (n, len(layers), hidden) to pass rates planted on the last layer's states
    (`signal`) or to noise, recorded as fitted for `label_key` at `created_at`."""
    rng = np.random.default_rng(0)
    x = features[:, -1]
    z = (x - x.mean(0)) @ rng.normal(size=x.shape[1])
    logit = 2.5 * z / z.std() if signal else rng.normal(size=len(x))
    pass_rate = rng.binomial(TRIALS, expit(logit)) / TRIALS
    report = fit_probe(features, pass_rate, TRIALS, np.array([f"g{i % 6}" for i in range(len(x))]), layers)
    return replace(report, provenance={**report.provenance, "label_key": label_key, "created_at": created_at})
