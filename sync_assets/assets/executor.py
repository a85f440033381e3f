"""The executor of sync runs: Dagster's multiprocess executor, which first clears up after dead runs,
and runs a plan of one step (one table) with Dagster's in-process executor instead.

A step process costs seconds before the sync starts (a forkserver importing the code location,
then the step's own start), more than most incremental syncs take; a run of one table gains
nothing from it but crash isolation, which the catalog's `execution.single_table_in_process: false`
keeps (docs/performance.md, "Dagster's own cost").

A run whose worker process was killed (SIGKILL, OOM, a reboot) stays STARTED in Dagster and keeps
the pool slots of the steps it was running, so the next sync of those tables would wait for ever:
with the default run launcher nothing checks a run worker's health, and without a daemon nothing
frees the slots at all (`dagster asset materialize` alone). Every run therefore records its worker
(host and pid) in a run tag, and before its own steps claim slots, fails the runs of this machine
whose worker is gone and frees the slots they hold, through Dagster's own instance calls. Runs on
other machines are left to Dagster's run monitoring (the Docker and Kubernetes launchers check
their workers' health). A step process that outlived its run worker still blocks a second sync of
its table: sync_log lets one live sync per table run at a time (sync/audit.py).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from typing import Any

import dagster as dg

from sync_assets.sync.audit import HOST, process_exists

WORKER_TAG = "sync_assets/run_worker"
IN_PROGRESS = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


FORKSERVER_PRELOAD = "sync_assets.assets.forkserver"


SINGLE_STEP_IN_PROCESS = "single_step_in_process"


def build_executor(
    tag_concurrency_limits: list[dict[str, Any]], *, single_step_in_process: bool = True
) -> dg.ExecutorDefinition:
    """Tables in parallel, within the per-source limits; steps fork from a preloaded server; a
    single step runs in the run's process."""
    config: dict[str, Any] = {
        "tag_concurrency_limits": tag_concurrency_limits,
        SINGLE_STEP_IN_PROCESS: single_step_in_process,
    }
    if "forkserver" in multiprocessing.get_all_start_methods():  # not on Windows
        # Step processes fork from a server that imported the code location once, instead of each
        # spawning an interpreter that builds every table's definitions again (bench/overhead.py).
        config["start_method"] = {"forkserver": {}}
    return _reaping_multiprocess_executor.configured(config)


@dg.executor(
    name="multiprocess",
    config_schema={
        **dg.multiprocess_executor.config_schema.config_type.fields,  # type: ignore[union-attr]
        SINGLE_STEP_IN_PROCESS: dg.Field(bool, default_value=True),
    },
    requirements=dg.multiprocess_executor.get_requirements,
)
def _reaping_multiprocess_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    config = dict(init_context.executor_config)
    single_step_in_process = config.pop(SINGLE_STEP_IN_PROCESS)
    server = (config.get("start_method") or {}).get("forkserver")  # type: ignore[union-attr]
    if server is not None:
        # Dagster preloads the job's own module; ours is added, so the server ignores SIGTERM.
        module = getattr(init_context.job, "get_module", lambda: None)()
        preload = server.get("preload_modules") or [module or "dagster"]
        config["start_method"] = {"forkserver": {**server, "preload_modules": [*preload, FORKSERVER_PRELOAD]}}
    inner = dg.multiprocess_executor.executor_creation_fn(init_context._replace(executor_config=config))  # type: ignore[misc]
    single = None
    if single_step_in_process:
        shared = {k: config[k] for k in ("retries", "step_dependency_config") if k in config}
        single = dg.in_process_executor.executor_creation_fn(init_context._replace(executor_config=shared))  # type: ignore[misc]
    return _Reaping(inner, single_step=single)


class _Reaping(dg.Executor):
    """Runs `reap_dead_runs` at the start of the run, then hands over to the wrapped executor, or
    to `single_step` for a plan of one step."""

    def __init__(self, inner: dg.Executor, *, single_step: dg.Executor | None = None) -> None:
        self._inner = inner
        self._single_step = single_step

    @property
    def retries(self) -> Any:
        return self._inner.retries

    @property
    def step_dependency_config(self) -> Any:
        return self._inner.step_dependency_config

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[dg.DagsterEvent]:
        instance = plan_context.instance
        instance.add_run_tags(plan_context.run_id, {WORKER_TAG: f"{HOST}:{os.getpid()}"})
        for message in reap_dead_runs(instance, current_run_id=plan_context.run_id):
            plan_context.log.warning(message)
        executor = self._inner
        if self._single_step is not None and len(execution_plan.step_keys_to_execute) == 1:
            executor = self._single_step
        yield from executor.execute(plan_context, execution_plan)


def reap_dead_runs(instance: dg.DagsterInstance, *, current_run_id: str | None = None) -> list[str]:
    """Fail the runs of this machine whose worker process is gone; free the pool slots they hold.

    Returns what was done, one line per run.
    """
    storage = instance.event_log_storage
    holding = set(storage.get_concurrency_run_ids()) if storage.supports_global_concurrency_limits else set()
    candidates = {
        r.dagster_run.run_id: r.dagster_run
        for r in instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS))
    }
    others = holding - candidates.keys()
    if others:
        candidates.update(
            {
                r.dagster_run.run_id: r.dagster_run
                for r in instance.get_run_records(dg.RunsFilter(run_ids=list(others)))
            }
        )
    done = []
    for run_id, run in candidates.items():
        worker = run.tags.get(WORKER_TAG)
        if run_id == current_run_id or worker is None or not _gone(worker):
            continue
        what = []
        if not run.is_finished:
            message = f"its run worker ({worker}) is gone: the process was killed or crashed"
            if run.status == dg.DagsterRunStatus.CANCELING:
                instance.report_run_canceled(run, message=f"Canceled: {message}")
            else:
                instance.report_run_failed(run, message=f"Failed: {message}")
            what.append("marked " + ("canceled" if run.status == dg.DagsterRunStatus.CANCELING else "failed"))
        if run_id in holding:
            storage.free_concurrency_slots_for_run(run_id)
            what.append("its pool slots freed")
        if what:
            done.append(f"run {run_id} ({worker} is gone): {', '.join(what)}")
    return done


def _gone(worker: str) -> bool:
    """Whether the worker `host:pid` is a process of this machine that no longer exists."""
    host, _, pid = worker.rpartition(":")
    return host == HOST and pid.isdigit() and not process_exists(int(pid))
