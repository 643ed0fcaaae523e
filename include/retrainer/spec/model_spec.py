"""What model a workload trains, declared as data: the ensemble's members and how each is fitted.

The network code (:mod:`retrainer.training.model`) builds whatever a :class:`ModelSpec` declares; the
workload owns the spec, so a workload can declare another ensemble without touching training code. A run
may train a subset of the declared members (the ``members`` parameter): a cheaper run for smoke tests and
for measuring one member alone.
"""

from __future__ import annotations

import dataclasses

ALL_MEMBERS = "all"


@dataclasses.dataclass(frozen=True)
class Member:
    """One wide-and-deep network of the ensemble, and how its wide (linear) part is fitted.

    ``warm_start_epochs``: epochs fitting the wide part alone (Adam at the spec's warm-start learning rate,
    cosine) before the whole member trains, so that early stopping, which ends when the deep part overfits,
    finds a converged linear model to build on. ``wide_optimizer``: ``adam`` (the deep part's, at the run's
    learning rate) or ``adagrad`` (per-coordinate steps that shrink as evidence accumulates, as the original
    wide-and-deep paper fitted its wide part).
    """

    name: str
    wide_optimizer: str = "adam"
    warm_start_epochs: int = 0


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    members: tuple[Member, ...]
    warm_start_learning_rate: float = 0.05
    adagrad_learning_rate: float = 0.1

    def __post_init__(self) -> None:
        names = [m.name for m in self.members]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"a model needs at least one member and unique member names, got {names}")

    @property
    def member_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)

    def select(self, members: str) -> ModelSpec:
        """The spec with only the named members (comma-separated, in declared order); ``all``: unchanged."""
        if members == ALL_MEMBERS:
            return self
        wanted = [n.strip() for n in members.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(self.member_names))
        if unknown or not wanted:
            raise ValueError(f"members {members!r}: unknown {unknown}; this model declares {list(self.member_names)}")
        return dataclasses.replace(self, members=tuple(m for m in self.members if m.name in wanted))


# Three members that err differently: each alone is ahead of the baselines on some weeks and behind on
# others (the warm start where logistic regression is strong, Adagrad and the joint fit where the deep
# part's interactions pay); their mean logit was ahead on every date measured, over seeds (docs: "Training").
WIDE_AND_DEEP_ENSEMBLE = ModelSpec(
    members=(
        Member("warm_linear", wide_optimizer="adam", warm_start_epochs=30),
        Member("adagrad_wide", wide_optimizer="adagrad"),
        Member("joint", wide_optimizer="adam"),
    )
)
