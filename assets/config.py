"""Run configuration shared by several assets."""


from typing import Optional

from dagster import Config
from pydantic import Field

from pipeline.allocation import AllocationConfig
from pipeline.strata import Strata


class StrataConfig(Config):
    """Pass-rate bins, easy → hard, and which problems are kept out of the stages."""

    edges: list[float] = Field(
        default=[1.0, 2 / 3, 1 / 3, 0.0],
        description="bin edges, strictly descending from 1 to 0; K+1 edges make K stages",
    )
    include_solved: bool = Field(default=False, description="keep always-solved problems (in stage 1)")
    include_unsolved: bool = Field(default=False, description="keep never-solved problems (in the last stage)")

    def strata(self) -> Strata:
        return Strata.from_edges(
            self.edges, exclude_solved=not self.include_solved, exclude_unsolved=not self.include_unsolved
        )


class RolloutsConfig(Config):
    """How many rollouts each problem gets."""

    policy: str = Field(default="uniform", description="uniform (n per problem) or adaptive (rounds)")
    samples_per_problem: int = Field(default=8, description="uniform: rollouts per problem")
    min_samples: int = Field(default=4, description="adaptive: first-round rollouts per problem")
    max_samples: int = Field(default=64, description="adaptive: cap per problem")
    batch_per_problem: int = Field(default=4, description="adaptive: rollouts added per round")
    confidence: float = Field(default=0.99, description="adaptive: stop once the stratum is this sure")
    total_budget: Optional[int] = Field(default=None, description="cap on total rollouts")
    strata: StrataConfig = Field(default=StrataConfig(), description="the strata allocation settles")

    def allocation(self) -> AllocationConfig:
        return AllocationConfig(
            policy=self.policy,
            n_uniform=self.samples_per_problem,
            min_samples=self.min_samples,
            max_samples=self.max_samples,
            batch_per_problem=self.batch_per_problem,
            confidence=self.confidence,
            total_budget=self.total_budget,
        )
