"""The study layer: a study config as a plan of stages (build, nodes, plan), run by an executor (executors, with
the checks before it: preflight), then its results tables, fits and report (run); what a dry run costs (estimate)
and how far a running study is (status). Library packages never import it; it composes them.

`build_plan(cfg, workdir)` expands a study config, without running anything and without torch, into
nodes: real shards (and, per `[[synthetic]]` configuration — written or expanded from `[[grid]]` tables,
synscale.grid — a generated set) -> nested subsets -> train -> evaluate on the real test set, its shifts,
the OOD sets and by linear probes; with `curves = ["best", "worst"]` a `select` node that picks them from
the grid's validation losses and the picked configurations' models at the other scales; per configuration
its metrics; CLIP's pairs, models and zero-shot evaluations. Each node calls one stage function of
its package (synscale.data.stages, .prompts.stages, .generate.stages, .train.stages, .evaluate.stages,
.metrics.run); `run_study` hands the plan to an executor and writes the results tables (synscale.results),
the fits and the report. Every node is a stage on disk (see `synscale.stage`), so a study that is run
again skips what is complete and redoes what was interrupted.

Workdir layout:
    W/stages/<kind>/<id>/        stage outputs (content-addressed)
    W/plan/                      the plan and each node's state (synscale status W)
    W/results/*.parquet          the tables that fits and the report read
    W/report/index.html          the report
    W/study.json                 the resolved config of the last run
    W/study.lock                 held by the study running here, with its name, identity, processes and hosts
Paths written into these files are relative to W where they point inside it (synscale.workdir): a workdir
can be moved.
"""

from __future__ import annotations

from synscale.stage import StageResult
from synscale.study.build import EVALUATIONS, Evaluation, ModelSpec, StudyPlan, build_plan
from synscale.study.nodes import picked
from synscale.study.run import run_study
from synscale.train.stages import load_model  # the study's trained models: load_model(stage, train)

__all__ = ["EVALUATIONS", "Evaluation", "ModelSpec", "StageResult", "StudyPlan", "build_plan", "load_model", "picked",
           "run_study"]
