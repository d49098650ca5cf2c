"""Whether two gold answers say the same thing, by the verifier that scores them: `10` and `10.0`,
`1/2` and `0.5` are one answer to math-verify, so two copies of a problem carrying them agree."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.verify.verification import VerificationTask, VerifierPool

Gold = tuple[str, str, str]
"""(verifier, gold answer, metadata) of one problem."""


def golds_agree(pool: VerifierPool, pairs: Sequence[tuple[Gold, Gold]]) -> list[bool]:
    """For each pair, whether each gold passes as an answer to the other (both ways: a verifier
    need not be symmetric) under the same verifier."""
    forward = [VerificationTask(a[0], a[1], b[1], a[2]) for a, b in pairs]
    backward = [VerificationTask(b[0], b[1], a[1], b[2]) for a, b in pairs]
    verdicts = pool.verify_many(forward + backward)
    n = len(pairs)
    return [a[0] == b[0] and verdicts[i].passed and verdicts[n + i].passed for i, (a, b) in enumerate(pairs)]
