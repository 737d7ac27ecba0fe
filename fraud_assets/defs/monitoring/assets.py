"""feature_skew: the online paths' served feature vectors against the offline ones, row by row.

It reads the day's `decision_log` (the REST service's and the stream workers' decisions, with
the vectors they scored), recomputes the same transactions' features from `card_features`
(the Spark path) under each deciding model's contract, and reports per feature and per cause
(fraud_assets.lib.skew). Its check warns above `skew_warn_rate` differing rows and fails
above `skew_fail_rate`; the day's differing rows, both vectors each, are the `feature_skew`
table; the figures go to the Pushgateway for the FraudscaleFeatureSkew alerts.
"""

import datetime as dt

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from fraud_assets.defs.partitions import partition_days, single_run
from fraud_assets.defs.resources import MonitoringResource, StorageResource
from fraud_assets.lib.decisions import DECISION_SCHEMA
from fraud_assets.lib.monitoring import push, skew_figures
from fraud_assets.lib.skew import SkewReport, compare, markdown, offline_inputs, served
from fraud_assets.lib.warehouse import day_folder, read_days, write_day
from fraud_core.bundle import BundleError
from fraud_core.features import DataContract

SKEW_CHECK = dg.AssetCheckSpec(
    "feature_skew_rate",
    asset="feature_skew",
    description="Served feature vectors equal the offline ones: warns above one differing "
    "row in 10,000, fails above one in 1,000 (FRAUD_ASSETS_SKEW_WARN_RATE, _FAIL_RATE).",
)


def feature_skew(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    spark: LazyPySparkResource,
    monitoring: MonitoringResource,
) -> dg.MaterializeResult:
    """Served feature vectors of the day against the Spark path's, row by row, with causes."""
    reports = {day: _day_report(storage, spark, monitoring, day) for day in partition_days(context)}
    newest = reports[max(reports)]
    pushed = push(
        monitoring.pushgateway_url,
        "feature_skew",
        skew_figures(newest.rows_by_path, newest.mismatches_by_path, _by_cause(newest)),
    )
    worst_day, worst = max(reports.items(), key=lambda item: item[1].mismatch_rate)
    rate = worst.mismatch_rate
    fail, warn = monitoring.skew_fail_rate, monitoring.skew_warn_rate
    return dg.MaterializeResult(
        metadata={
            "day": worst_day.isoformat(),
            "mismatch_rate_by_day": {d.isoformat(): r.mismatch_rate for d, r in reports.items()},
            "rows_compared": worst.rows,
            "mismatched_rows": worst.mismatched_rows,
            "mismatch_rate": rate,
            "rows_by_path": worst.rows_by_path,
            "causes": worst.causes,
            "served_degraded": worst.served_degraded,
            "not_in_warehouse": worst.not_in_warehouse,
            "features": _feature_table(worst),
            "report": dg.MetadataValue.md(markdown(worst)),
            "pushed": pushed,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="feature_skew_rate",
                passed=rate <= warn,
                severity=dg.AssetCheckSeverity.ERROR if rate > fail else dg.AssetCheckSeverity.WARN,
                metadata={"day": worst_day.isoformat(), "mismatch_rate": rate,
                          "warn_above": warn, "fail_above": fail, "causes": worst.causes},
            )
        ],
    )  # fmt: skip


def _day_report(
    storage: StorageResource,
    spark: LazyPySparkResource,
    monitoring: MonitoringResource,
    day: dt.date,
) -> SkewReport:
    """One day's report; its differing rows become the day's `feature_skew` partition."""
    try:
        log = read_days(storage.table("decision_log"), [day]).cast(DECISION_SCHEMA)
    except FileNotFoundError:
        log = DECISION_SCHEMA.empty_table()
    online = served(log)
    features = day_folder(storage.table("card_features"), day)
    if online.num_rows and not features.exists():
        raise dg.Failure(description=f"card_features has no {day}: materialize it first")
    ids = online["transaction_id"].to_pylist()
    report = compare(
        online,
        offline_inputs(spark.spark_session, features, ids) if ids else None,
        _contracts(storage, set(online["model_version"].to_pylist())),
        late_after_us=int(monitoring.late_after_seconds * 1_000_000),
    )
    write_day(storage.table("feature_skew"), day, report.mismatched)
    return report


def _contracts(storage: StorageResource, versions: set[str]) -> dict[str, DataContract]:
    out = {}
    for version in versions:
        try:
            out[version] = storage.model_store.load(version).metadata.contract
        except (BundleError, FileNotFoundError) as exc:
            raise dg.Failure(
                description=f"model {version} decided online but cannot be read: {exc}"
            ) from None
    return out


def _by_cause(report: SkewReport) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for path, cause in zip(
        report.mismatched["path"].to_pylist(), report.mismatched["cause"].to_pylist(), strict=True
    ):
        out[(path, cause)] = out.get((path, cause), 0) + 1
    return out


def _feature_table(report: SkewReport) -> dg.MetadataValue:
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord({"feature": f.name, "rows": f.rows, "mismatches": f.mismatches,
                            "rate": f.rate, "max_abs_delta": f.max_abs_delta})
            for f in report.features
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("feature", "string"), dg.TableColumn("rows", "int"),
                dg.TableColumn("mismatches", "int"), dg.TableColumn("rate", "float"),
                dg.TableColumn("max_abs_delta", "float"),
            ]
        ),
    )  # fmt: skip


def build(daily: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The monitoring assets on `daily` partitions."""
    return [
        dg.asset(
            partitions_def=daily,
            deps=["decision_log", "card_features"],
            backfill_policy=single_run,
            check_specs=[SKEW_CHECK],
            group_name="monitoring",
            kinds={"spark", "parquet"},
        )(feature_skew)
    ]
