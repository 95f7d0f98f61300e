"""The Optuna study of a search: storage, the trial loop every worker runs, progress, Pareto front.

Objectives: maximize the int8 fold score (F1, or ROC-AUC), minimize int8 bytes, minimize int8
invoke p50. The device limits are hard constraints (``Trial.set_constraint``, which TPE reads):
a trial over ``max_bytes`` or ``max_p50_us`` still completes with its figures (so TPE learns
where the limits lie) but is infeasible: it never enters the Pareto front or the choice.
A trial that fails (op-list gate, int8 gate, any TinyadError) is told FAIL with its reason in
the ``failure`` user attribute; the worker goes on with the next trial.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from pathlib import Path

from firmware_host.errors import TinyadError

DIRECTIONS = ("maximize", "minimize", "minimize")
SQLITE_TIMEOUT_S = 60          # how long a worker waits for another's SQLite write lock


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def storage(url: str):
    """An RDB storage; SQLite waits for a lock instead of failing when workers write at once."""
    optuna = _optuna()
    kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def fingerprint(raw: dict) -> str:
    """What a study was made from (the recipe table and the space searched): a resumed study must match."""
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def open_study(url: str, name: str, sampler=None):
    optuna = _optuna()
    return optuna.create_study(storage=storage(url), study_name=name, directions=list(DIRECTIONS),
                               load_if_exists=True, sampler=sampler)


def sampler(spec, seed: int, worker: int, offset: int):
    """TPE over the space (it reads the constraints each trial sets); seeded per worker and per
    resume (``offset``: trials already in the study) so that two workers, or a resumed run, never
    replay the same draws."""
    optuna = _optuna()
    return optuna.samplers.TPESampler(n_startup_trials=spec.random_trials, seed=seed + 1009 * worker + offset,
                                      multivariate=True, group=True)


# -- counting and progress ------------------------------------------------------------------------

def finished(trial) -> bool:
    """A trial that counts toward --trials: complete, or failed for a reason (not interrupted)."""
    state = trial.state.name
    return state == "COMPLETE" or (state == "FAIL" and "failure" in trial.user_attrs)


def counted(trials, run: str) -> int:
    """Finished trials, plus those this run's workers are running (so workers stop at the budget)."""
    return sum(1 for t in trials if finished(t) or (t.state.name == "RUNNING" and t.user_attrs.get("run") == run))


def best_feasible(trials) -> dict | None:
    ok = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get("feasible")]
    if not ok:
        return None
    t = max(ok, key=lambda t: (round(t.values[0], 4), -t.values[1], -t.values[2]))
    return {"trial": t.number, "score": t.values[0], "int8_bytes": int(t.values[1]), "p50_us": t.values[2],
            "metric": t.user_attrs.get("metric")}


def status(study, total: int, run: str, started: float) -> dict:
    """Trials finished / total, the best feasible trial so far and the ETA (seconds) of this run."""
    trials = study.get_trials(deepcopy=False)
    done = sum(1 for t in trials if finished(t))
    this_run = sum(1 for t in trials if finished(t) and t.user_attrs.get("run") == run)
    elapsed = time.time() - started
    remaining = max(total - done, 0)
    eta = elapsed / this_run * remaining if this_run else None
    return {"done": done, "total": total, "failed": sum(1 for t in trials if t.state.name == "FAIL" and
                                                        "failure" in t.user_attrs),
            "best": best_feasible(trials), "eta_s": eta, "elapsed_s": elapsed}


# -- the worker loop -------------------------------------------------------------------------------

def work(config: dict, worker: int, progress=None) -> int:
    """Run trials of the study in ``config`` until it holds ``trials`` finished ones or the timeout
    passes. Returns the number of trials this worker ran."""
    from ..prepare import prepare
    from ..recipe import parse_recipe
    from .folds import fold_method, fold_prepared, make_folds
    from .space import apply, parse_search, suggest
    from .trial import as_attrs, evaluate

    optuna = _optuna()
    path = Path(config["recipe_path"])
    raw = config["recipe"]
    recipe = parse_recipe(raw, path)
    spec = parse_search(raw.get("search", {}), path)
    prep = prepare(recipe, Path(config["data_root"]))
    folds = make_folds(prep, spec.folds, fold_method(spec.fold_method, recipe.split.method), recipe.seed)
    fold_preps = [fold_prepared(prep, f) for f in folds]
    study = open_study(config["storage"], config["study"])
    study = open_study(config["storage"], config["study"],
                       sampler(spec, recipe.seed, worker, len(study.get_trials(deepcopy=False))))
    rankings = study.user_attrs["rankings"]
    space = spec.knobs(recipe.detector.kind)
    deadline = config["started"] + config["timeout"] if config.get("timeout") else math.inf
    ran = 0
    while counted(study.get_trials(deepcopy=False), config["run"]) < config["trials"] and time.time() < deadline:
        trial = study.ask()
        ran += 1
        try:
            trial.set_user_attr("run", config["run"])
            trial.set_user_attr("worker", worker)
            overrides = suggest(trial, space, raw)
            trial.set_user_attr("overrides", [[s, k, v] for (s, k), v in overrides.items()])
            outcome = evaluate(parse_recipe(apply(raw, overrides), path), fold_preps, rankings, spec.metric,
                               spec.latency_invokes)
        except TinyadError as exc:
            trial.set_user_attr("failure", str(exc))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        except BaseException as exc:       # Ctrl-C or a bug: leave no RUNNING trial behind, then stop
            trial.set_user_attr("interrupted", f"{type(exc).__name__}: {exc}")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        else:
            for key, value in as_attrs(outcome).items():
                trial.set_user_attr(key, value)
            trial.set_user_attr("feasible", outcome.int8_bytes <= spec.max_bytes and
                                outcome.p50_us <= spec.max_p50_us)
            # Hard limits: a positive value makes the trial infeasible for the sampler too.
            trial.set_constraint("int8_bytes_over_max", outcome.int8_bytes - spec.max_bytes)
            trial.set_constraint("p50_us_over_max", outcome.p50_us - spec.max_p50_us)
            study.tell(trial, [outcome.score, float(outcome.int8_bytes), outcome.p50_us])
        if progress:
            progress(status(study, config["trials"], config["run"], config["started"]))
    return ran


def fail_running(study, run: str) -> int:
    """Mark this run's trials still RUNNING as failed (its workers have stopped: Ctrl-C while a
    worker was between asking for a trial and telling it). They do not count toward --trials."""
    optuna = _optuna()
    left = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if t.user_attrs.get("run") == run]
    for t in left:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
    return len(left)


# -- the Pareto front ------------------------------------------------------------------------------

def trial_rows(study) -> list[dict]:
    """Every finished trial as a plain row (figures, parameters, failure reason)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if not finished(t):
            continue
        a = t.user_attrs
        row = {"trial": t.number, "state": t.state.name, "worker": a.get("worker"), "params": dict(t.params),
               "overrides": a.get("overrides", []), "failure": a.get("failure", "")}
        if t.state.name == "COMPLETE":
            row.update(score=t.values[0], int8_bytes=int(t.values[1]), p50_us=t.values[2], metric=a["metric"],
                       fold_scores=a["fold_scores"], float_score=sum(a["float_scores"]) / len(a["float_scores"]),
                       agreement=min(a["agreement"]), parameters=a["parameters"], feasible=bool(a["feasible"]),
                       seconds=a["seconds"], remedies=a.get("remedies", []))
        rows.append(row)
    return rows


def _dominates(a: dict, b: dict) -> bool:
    no_worse = a["score"] >= b["score"] and a["int8_bytes"] <= b["int8_bytes"] and a["p50_us"] <= b["p50_us"]
    better = a["score"] > b["score"] or a["int8_bytes"] < b["int8_bytes"] or a["p50_us"] < b["p50_us"]
    return no_worse and better


def pareto_front(rows: list[dict]) -> list[dict]:
    """Feasible complete trials no other feasible trial dominates, best score first."""
    ok = [r for r in rows if r["state"] == "COMPLETE" and r["feasible"]]
    front = [r for r in ok if not any(_dominates(o, r) for o in ok if o is not r)]
    return sorted(front, key=lambda r: (-r["score"], r["int8_bytes"], r["p50_us"]))


def choose(front: list[dict]) -> dict | None:
    """The best score on the front (to 4 decimals); a tie goes to fewer bytes, then the lower p50."""
    if not front:
        return None
    return max(front, key=lambda r: (round(r["score"], 4), -r["int8_bytes"], -r["p50_us"]))
