"""Per-update-type staleness: Dagster's freshness policy counts any partition, these do not.

An hourly success would otherwise hide a daily or mass sync that has been failing for days, so
each scheduled update type gets an asset check on its own partition's last success. The
`sync_freshness` sensor evaluates them on a timer and records the results in the UI.
"""

import json
import time
from dataclasses import dataclass
from datetime import timedelta

import dagster as dg

from sync_assets.catalog.models import Catalog, TableSpec, UpdateType

FRESHNESS_SENSOR = "sync_freshness"


@dataclass(frozen=True)
class Staleness:
    """Warn after `warn`, fail after `fail` without a successful sync of this partition."""

    key: dg.AssetKey
    update_type: UpdateType
    warn: timedelta
    fail: timedelta

    @property
    def check_name(self) -> str:
        return f"{self.update_type.value}_fresh"

    @property
    def spec(self) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(
            self.check_name,
            asset=self.key,
            description=(
                f"The last successful {self.update_type.value} sync is at most {self.warn} old "
                f"(warn) / {self.fail} old (fail)."
            ),
        )

    def evaluate(self, instance: dg.DagsterInstance, now: float | None = None) -> dg.AssetCheckResult:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=self.key, asset_partitions=[self.update_type.value]), limit=1
        ).records
        limits = {"warn_after_s": self.warn.total_seconds(), "fail_after_s": self.fail.total_seconds()}
        if not records:
            return dg.AssetCheckResult(
                asset_key=self.key,
                check_name=self.check_name,
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"never synced by a {self.update_type.value} sync",
                metadata=limits,
            )
        age = (now or time.time()) - records[0].timestamp
        too_old = age > self.fail.total_seconds()
        severity = dg.AssetCheckSeverity.ERROR if too_old else dg.AssetCheckSeverity.WARN
        passed = age <= self.warn.total_seconds()
        state = "fresh" if passed else ("stale" if severity == dg.AssetCheckSeverity.ERROR else "late")
        return dg.AssetCheckResult(
            asset_key=self.key,
            check_name=self.check_name,
            passed=passed,
            severity=severity,
            description=f"{state}: last {self.update_type.value} sync {timedelta(seconds=int(age))} ago",
            metadata={**limits, "age_s": round(age, 1), "last_run_id": records[0].run_id},
        )


def stalenesses(catalog: Catalog, table: TableSpec, key: dg.AssetKey) -> list[Staleness]:
    """One per scheduled update type: warn after 1.5 intervals, fail after 3."""
    return [
        Staleness(key, update_type, warn=schedule.interval() * 1.5, fail=schedule.interval() * 3)
        for update_type, schedule in table.schedules_for(catalog.defaults).items()
    ]


def build_freshness_sensor(items: list[Staleness], *, interval_seconds: int = 300) -> dg.SensorDefinition:
    """Evaluates every staleness check and records results whose state changed."""

    @dg.sensor(
        name=FRESHNESS_SENSOR,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Records each table's per-update-type staleness checks in the UI.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        previous = json.loads(context.cursor or "{}")
        states: dict[str, str] = {}
        events = []
        for item in items:
            result = item.evaluate(context.instance)
            name = f"{item.key.to_user_string()}:{item.check_name}"
            states[name] = "pass" if result.passed else str(result.severity.value)
            if previous.get(name) != states[name]:
                events.append(
                    dg.AssetCheckEvaluation(
                        asset_key=item.key,
                        check_name=item.check_name,
                        passed=result.passed,
                        severity=result.severity,
                        description=result.description,
                        metadata=result.metadata,
                    )
                )
        return dg.SensorResult(asset_events=events, cursor=json.dumps(states))

    return _sensor
