"""The ways every trained model is evaluated, as one registry (`EVALUATIONS`, run in this order): each entry
reads its part of the study config (`[evaluate]`, `[[evaluate.sets]]`, `[[evaluate.probes]]`,
`[[evaluate.zero_shot]]`), adds the nodes of its evaluation sets through the plan builder it is given (the study
layer's, synscale.study.build) and says how models are evaluated on them; an entry adds nothing where the study
configures none. A new kind of evaluation is one entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from synscale.registry import Registry


class PlanBuilder(Protocol):
    """What an evaluation needs of the plan it adds nodes to (each method returns the node's key)."""

    def shards(self, split: str, what: str = ..., **kw: Any) -> str: ...

    def reference(self, train: str) -> str: ...

    def shift_set(self, test: str, model: str | None, name: str) -> str: ...

    def ood_set(self, base: str, spec: Any) -> str: ...


@dataclass(frozen=True)
class Evaluation:
    """One way every model of a task is evaluated: on an evaluation set's node (`set_key`; `ood`: its logits
    restricted to the classes it covers; `templates`: a zero-shot set's own), or by a linear probe on a
    downstream set's (train, test) nodes."""

    name: str  # the results' eval_set
    set_key: str | None = None
    ood: bool = False
    templates: str = ""
    probe: Any = None  # synscale.config.ProbeConfig
    probe_sets: tuple[str, str] | None = None
    tasks: tuple[str, ...] = ("classification", "clip")


# The study's evaluations, looked up by name and run in this order for every model: each adds the nodes of
# its sets to the plan and says how models are evaluated on them (none where the study configures none).
EVALUATIONS: Registry[Callable[[PlanBuilder, Any, str, str | None], list[Evaluation]]] = Registry("evaluation")


@EVALUATIONS.register("val")
def _val_evaluation(b: PlanBuilder, cfg: Any, test: str, train: str | None) -> list[Evaluation]:
    """The real test set."""
    return [Evaluation("val", test)]


@EVALUATIONS.register("shifts")
def _shift_evaluations(b: PlanBuilder, cfg: Any, test: str, train: str | None) -> list[Evaluation]:
    """`evaluate.shifts`: shifted copies of the real test set; the hard one is the test images a real-trained
    model (the reference) gets wrong."""
    from synscale.data.shifts import HARD

    out = []
    for name in cfg.evaluate.shifts:
        model = b.reference(train) if name == HARD else None
        out.append(Evaluation(name, b.shift_set(test, model, name)))
    return out


@EVALUATIONS.register("sets")
def _ood_evaluations(b: PlanBuilder, cfg: Any, test: str, train: str | None) -> list[Evaluation]:
    """`[[evaluate.sets]]`: OOD sets in the study's label space, each on the classes it covers."""
    return [Evaluation(spec.name, b.ood_set(train or test, spec), ood=True) for spec in cfg.evaluate.sets]


@EVALUATIONS.register("zero-shot")
def _zero_shot_evaluations(b: PlanBuilder, cfg: Any, test: str, train: str | None) -> list[Evaluation]:
    """`[[evaluate.zero_shot]]`: downstream sets that CLIP models classify zero-shot."""
    if not cfg.clip.scales:
        return []
    from synscale.data.datasets import columns_of

    return [Evaluation(z.name, b.shards(z.split, f"zero-shot set {z.name}", dataset=z.dataset, root=z.root,
                                        image_size=z.image_size, columns=columns_of(z)), templates=z.templates,
                       tasks=("clip",))
            for z in cfg.evaluate.zero_shot]


@EVALUATIONS.register("probes")
def _probe_evaluations(b: PlanBuilder, cfg: Any, test: str, train: str | None) -> list[Evaluation]:
    """`[[evaluate.probes]]`: linear probes of every model's features on downstream sets."""
    from synscale.data.datasets import columns_of

    return [Evaluation(f"probe:{p.name}", probe=p, probe_sets=tuple(
        b.shards(split, f"probe {p.name}", dataset=p.dataset, root=p.root, image_size=p.image_size,
                 columns=columns_of(p))
        for split in (p.train_split, p.test_split))) for p in cfg.evaluate.probes]
