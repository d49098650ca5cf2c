"""Difficulty strata: bins of pass rate, easy → hard, plus the `solved` / `unsolved` classes.

One rule assigns a class everywhere — to a true pass rate in simulation, to an observed pass rate
in the pipeline, and (in `pipeline.difficulty.estimators`) to posterior mass:

- `solved` (class 0) is the event p == 1 and `unsolved` (class -1) the event p == 0, exactly.
  Observed, that is "every trial passed" / "no trial passed". Under a posterior these events have
  positive mass only when the prior puts point masses on p = 1 and p = 0
  (`BetaPrior.solved_mass` / `unsolved_mass`, which `BetaPrior.fit_pool` estimates): a plain Beta
  posterior gives them probability 0, so no threshold stands in for "nearly solved".
- stage i (1 = easiest) is the bin (edges[i], edges[i-1]]; the last stage includes 0.
  With `exclude_solved` / `exclude_unsolved` off, p == 1 falls in stage 1 and p == 0 in the last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

SOLVED = 0
UNSOLVED = -1


@dataclass(frozen=True)
class Strata:
    """Pass-rate bins, easy → hard: edges from 1 down to 0, e.g. (1.0, 2/3, 1/3, 0.0) → 3 stages."""

    edges: tuple[float, ...] = field(default=(1.0, 0.5, 0.25, 0.0), metadata={
        "help": "pass-rate bin edges, strictly descending from 1 to 0; K+1 edges make K stages"})
    exclude_solved: bool = field(default=True, metadata={
        "help": "keep always-solved problems (p == 1) out of the stages as their own class"})
    exclude_unsolved: bool = field(default=True, metadata={
        "help": "keep never-solved problems (p == 0) out of the stages as their own class"})

    def __post_init__(self) -> None:
        edges = tuple(float(e) for e in self.edges)
        if len(edges) < 2:
            raise ValueError(f"strata need at least 2 edges (1 stage), got {edges}")
        if not all(math.isfinite(e) for e in edges):
            raise ValueError(f"strata edges must be finite, got {edges}")
        if edges[0] != 1.0 or edges[-1] != 0.0:
            raise ValueError(f"strata edges must start at 1 and end at 0, got {edges}")
        if any(hi <= lo for hi, lo in zip(edges, edges[1:])):
            raise ValueError(f"strata edges must be strictly descending, got {edges}")
        object.__setattr__(self, "edges", edges)

    @classmethod
    def from_edges(
        cls, edges: Sequence[float], *, exclude_solved: bool = True, exclude_unsolved: bool = True
    ) -> Strata:
        """Strata from any sequence of edges (validated: strictly descending from 1 to 0)."""
        return cls(tuple(edges), exclude_solved=exclude_solved, exclude_unsolved=exclude_unsolved)

    @property
    def n_stages(self) -> int:
        return len(self.edges) - 1

    @property
    def classes(self) -> tuple[int, ...]:
        """Every class id an estimate can fall in, easy → hard: 0 (solved), 1..K, -1 (unsolved)."""
        stages = tuple(range(1, self.n_stages + 1))
        return (
            ((SOLVED,) if self.exclude_solved else ())
            + stages
            + ((UNSOLVED,) if self.exclude_unsolved else ())
        )

    def labels(self) -> dict[int, str]:
        """Class id → name, in `classes` order: `solved`, `stage_1` … `stage_K`, `unsolved`."""
        names = {SOLVED: "solved", UNSOLVED: "unsolved"}
        return {c: names.get(c, f"stage_{c}") for c in self.classes}

    def class_of(
        self,
        pass_rate: ArrayLike,
        successes: ArrayLike | None = None,
        trials: ArrayLike | None = None,
    ) -> NDArray[np.int64]:
        """The class of each pass rate: 1..K for stages, 0 for solved, -1 for unsolved.

        `pass_rate` (true or estimated) picks the stage bin. Given `successes` and `trials`, the
        counts alone decide solved / unsolved (every trial passed / none did), so a smoothed pass
        rate such as a posterior mean is classed by the same rule as the raw s / n.
        """
        p = np.asarray(pass_rate, dtype=float)
        if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
            raise ValueError("pass rates must lie in [0, 1] (a problem with no trials has none)")
        interior = np.asarray(self.edges[-2:0:-1])  # ascending
        # stage = 1 + number of interior edges >= p, so an edge value belongs to the harder bin.
        stage = 1 + interior.size - np.searchsorted(interior, p, side="left")
        if successes is None and trials is None:
            all_passed, none_passed = p == 1.0, p == 0.0
        elif successes is None or trials is None:
            raise ValueError("give both successes and trials, or neither")
        else:
            s, n = np.asarray(successes), np.asarray(trials)
            if np.any(n <= 0) or np.any((s < 0) | (s > n)):
                raise ValueError("need 0 <= successes <= trials and trials > 0")
            all_passed, none_passed = s == n, s == 0
        if self.exclude_solved:
            stage = np.where(all_passed, SOLVED, stage)
        if self.exclude_unsolved:
            stage = np.where(none_passed, UNSOLVED, stage)
        return stage.astype(np.int64)

    def boundaries(self) -> list[float]:
        """Pass rates where a problem changes class: the interior edges, plus 1 and 0 when
        always-solved and never-solved problems are classes of their own."""
        bounds = list(self.edges[1:-1])
        if self.exclude_solved:
            bounds.append(1.0)
        if self.exclude_unsolved:
            bounds.append(0.0)
        return bounds

    def observed_class(self, successes: ArrayLike, trials: ArrayLike) -> NDArray[np.int64]:
        """The class the pipeline assigns from measured counts: `class_of(s / n, s, n)`."""
        s, n = np.asarray(successes), np.asarray(trials)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = s / n
        return self.class_of(rate, s, n)
