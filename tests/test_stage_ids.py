"""The ids of every stage of the demo's and both paper grids' plans, recorded before the stages took one signature
and their identity moved onto the config fields (issue 27), compared after: what enters a stage's id is the params
its stage function hashes, and the part of them a study config decides is computed here for every node of a plan,
without data and without running anything (the part the data decides, such as a generated set's prompts, is
hashed from the data by the same stage). A changed value means a workdir's stages would be made again (or, worse,
reused for other work): tests/data/stage_ids.json is rewritten only by `python tests/test_stage_ids.py --record`
when a change of an id is meant."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

RECORD = Path(__file__).parent / "data" / "stage_ids.json"

# (study, size, --set overrides): the demo at every size, a CLIP-only study, both paper grids, and recipes that
# exercise the keys added later (they enter an id only away from their defaults)
PLANS: dict[str, tuple[str, str, list[str]]] = {
    "demo": ("fashion-mnist", "default", []),
    "demo-smoke": ("fashion-mnist", "smoke", []),
    "demo-full": ("fashion-mnist", "full", []),
    "demo-clip-only": ("fashion-mnist", "default", ["retrieved=[]", "adaptive=[]", "scales=[]", "grid=[]", "mix=[]",
                                                    "curves=[]"]),
    "demo-added-keys": ("fashion-mnist", "default", [
        "train.eps=1e-6", "train.schedule.min_epochs=2.0", "train.workers=3", "train.checkpoint_every=7",
        "clip.train.accum_steps=2", "clip.train.batch_size=64", "metrics.device=cpu", "metrics.batch_size=50",
        'data.image_format="png"', "data.image_quality=80"]),  # lossless: not in the shards id
    "imagenet-sd": ("imagenet-sd", "default", []),
    "imagenet-sd-added-keys": ("imagenet-sd", "smoke", [
        'generation.guidance_convention="muse"', "generation.safety_checker=true", "train.schedule.epochs=10.0",
        'generation.executor="local"', "generation.ray_actors=4", "train.loader=\"stream\""]),
    "imagenet-sd-smoke": ("imagenet-sd", "smoke", []),
    "laion-clip": ("laion-clip", "default", []),
}


def _plan(study: str, size: str, overrides: list[str]) -> Any:
    from synscale.config import find_study, load_study
    from synscale.study import build_plan

    return build_plan(load_study(find_study(study), size, overrides=overrides)).plan


def node_params(node: Any) -> dict[str, Any]:
    """What a study config puts into the id of `node`'s stage: the params its stage function hashes, as far as
    the config decides them, each computed by the function the stage itself calls."""
    import dataclasses

    from synscale.data.datasets import columns_of
    from synscale.data.encoding import ImageEncoding
    from synscale.generate.stages import identity as generation_identity
    from synscale.schema import identity
    from synscale.train.stages import identity as train_identity

    a, fn = node.args, node.fn.__name__
    if fn == "shards":
        data = a["data"]
        if not a.get("dataset"):
            return {"dataset": data.dataset, "root": data.root, "image_size": data.image_size,
                    "shard_size": data.shard_size, "split": a["split"], **columns_of(data),
                    **ImageEncoding(data.image_format, data.image_quality).params()}
        return {"dataset": a["dataset"], "root": a.get("root", ""), "image_size": a.get("image_size", 0),
                "shard_size": data.shard_size, "split": a["split"], **(a.get("columns") or {})}
    if fn == "subset":
        return {"scale": a["scale"], "order_seed": a["seed"], **({"order": a["order"]} if a["order"] != "class" else {})}
    if fn == "reference_subset":
        return {"order_seed": a["seed"]}
    if fn == "train":
        return {"train": train_identity(a["tc"], a["scale"]), "scale": a["scale"],
                **({"real_prob": a["real_prob"]} if a.get("real_prob") is not None else {})}
    if fn == "train_reference":
        return {"train": train_identity(a["tc"], 10**12)}
    if fn == "train_picked":
        n = a["n_real"] + a["n_syn"]
        return {"train": train_identity(a["tc"], n), "n_real": a["n_real"], "n_syn": a["n_syn"], "which": a["which"],
                "names": a["names"], "seed": a["seed"]}
    if fn == "select":
        return {"eval_set": a.get("eval_set", "val"), "names": a["names"]}
    if fn == "evaluate":
        tc = a["tc"]
        return {"eval_set": a["eval_name"], "batch_size": tc.eval_batch_size, "crop": tc.crop, "ood": a.get("ood", False)}
    if fn == "probe":
        return {"probe": dataclasses.asdict(a["pc"])}  # every key of a probe is in its id
    if fn == "zero_shot_head":
        return {"templates": a["templates"]}
    if fn == "shift_set":
        return {"shift": a["name"], "seed": a["seed"]}
    if fn == "ood_set":
        spec = a["spec"]
        return {"set": identity(spec), "image_size": a["image_size"], "shard_size": a["shard_size"]}
    if fn == "caption_pool":
        return {"captioner": a["captioner"], "seed": a["seed"]}
    if fn == "synthetic_set":  # a metrics test set's config (its per_class, other seeds) is the node's own syn
        syn = a["syn"]
        return {"synthetic": generation_identity(syn), "max_scale": a["max_scale"], "per_class": syn.per_class}
    if fn == "clip_synthetic_set":
        return {"clip_synthetic": generation_identity(a["g"])}
    if fn == "metrics":
        mc = a["cfg"].metrics
        return {"metrics": identity(mc), "name": a["name"]}
    if fn == "pairs":
        cfg = a["cfg"]
        pc = cfg.clip.pairs
        need = pc.limit or max(cfg.clip.scales)
        if pc.dataset == "img2dataset":
            return {"dataset": "img2dataset", "root": pc.root, "image_size": pc.image_size,
                    "shard_size": cfg.data.shard_size, "split": "train", "limit": need,
                    **ImageEncoding(pc.image_format, pc.image_quality).params()}
        return {"captioner": pc.captioner, "pairs": need, "order_seed": cfg.clip.order_seed}
    if fn == "allocate_round":
        return {"adaptive": identity(a["ac"]), "round": a["round"], "candidates": a["candidates"],
                "pilot_scales": a["pilot_scales"]}
    if fn == "generate_round":  # and each delta set's prompts, which the allocation decides when it runs
        return {"arm": a["arm"], "round": a["round"], "synthetic": [generation_identity(g) for g in a["syns"]]}
    if fn == "train_round":
        return {"train": train_identity(a["tc"], a["scale"]), "scale": a["scale"]}
    if fn == "retrieve":
        rc = a["rc"]
        return {"retrieved": identity(rc), "size": a["size"], "shard_size": a["shard_size"],
                **({"templates": a["templates"]} if rc.strategy == "templates" else {}),
                **({"clip_train": identity(a["clip_tc"])} if rc.clip == "study" else {})}
    raise AssertionError(f"node {node.key!r}: no rule for its function {node.fn.__name__}")


def plan_ids(name: str) -> dict[str, str]:
    """{node key: 16 hex digits over its kind, its dependencies' keys and its config params}."""
    from synscale.stage import canonical

    plan = _plan(*PLANS[name])
    return {key: hashlib.sha256(canonical({"kind": n.kind, "deps": list(n.deps), "params": node_params(n)})
                                .encode()).hexdigest()[:16]
            for key, n in plan.nodes.items()}


@pytest.mark.parametrize("name", list(PLANS))
def test_stage_ids_are_those_recorded(name: str) -> None:
    recorded = json.loads(RECORD.read_text())[name]
    now = plan_ids(name)
    assert list(now) == list(recorded), "the plan's nodes (or their order) changed"
    changed = [k for k in now if now[k] != recorded[k]]
    assert not changed, f"{len(changed)} stage id(s) changed, e.g. {changed[:3]}"
    assert len(now) > 10


def test_the_record_sees_a_changed_recipe() -> None:
    """The record is sensitive: a key in the id changes the ids of the stages that use it, and only theirs."""
    base = plan_ids("demo-smoke")
    plan = _plan("fashion-mnist", "smoke", ["train.lr=0.0123"])
    from synscale.stage import canonical

    other = {key: hashlib.sha256(canonical({"kind": n.kind, "deps": list(n.deps), "params": node_params(n)})
                                 .encode()).hexdigest()[:16] for key, n in plan.nodes.items()}
    changed = {k for k in base if base[k] != other[k]}
    kinds = {plan.nodes[k].kind for k in changed}
    assert "train" in kinds and not kinds & {"shards", "subset", "generate", "captions", "pairs"}


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_stage_ids.py --record   (rewrites tests/data/stage_ids.json)")
    RECORD.parent.mkdir(exist_ok=True)
    RECORD.write_text(json.dumps({name: plan_ids(name) for name in PLANS}, indent=0) + "\n")
    print(f"recorded {sum(len(v) for v in json.loads(RECORD.read_text()).values()):,} stage ids -> {RECORD}")
