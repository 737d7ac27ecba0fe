"""Entry point of the code location (workspace.yaml loads `defs` from here).

`defs` is loaded lazily by Dagster (`@dg.definitions`): the settings are read then, once, not
when this module is imported.
"""

import dagster as dg

from fraud_assets.defs import automation
from fraud_assets.defs.features import assets as features
from fraud_assets.defs.ingest import assets as ingest
from fraud_assets.defs.monitoring import assets as monitoring
from fraud_assets.defs.online import assets as online
from fraud_assets.defs.partitions import daily_partitions
from fraud_assets.defs.publishing import assets as publishing
from fraud_assets.defs.resources import resources_for
from fraud_assets.defs.rollout import assets as rollout
from fraud_assets.defs.scoring import assets as scoring
from fraud_assets.defs.training import assets as training
from fraud_assets.defs.training import checks as training_checks
from fraud_assets.settings import AssetSettings


def asset_graph(
    settings: AssetSettings,
) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """Every asset and asset check, on the settings' daily partitions."""
    daily = daily_partitions(settings.start_date)
    unpartitioned = [
        a
        for a in dg.load_assets_from_modules([training, publishing])
        if isinstance(a, dg.AssetsDefinition)
    ]
    delay = settings.label_delay_us
    assets = [
        *ingest.build(daily),
        *features.build(daily, delay),
        *unpartitioned,
        *scoring.build(daily),
        *online.build(daily, delay),
        *rollout.build(daily),
        *monitoring.build(daily),
    ]
    return assets, list(dg.load_asset_checks_from_modules([training_checks]))


def build_definitions(settings: AssetSettings) -> dg.Definitions:
    """The code location for these settings: asset graph, resources, jobs and automation."""
    assets, checks = asset_graph(settings)
    return dg.Definitions.merge(
        dg.Definitions(assets=assets, asset_checks=checks, resources=resources_for(settings)),
        automation.defs,
        dg.Definitions(jobs=rollout.jobs, sensors=rollout.sensors),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(AssetSettings.from_env())
