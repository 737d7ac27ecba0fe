"""Entry point of the code location (workspace.yaml loads `defs` from here)."""

import dagster as dg

from fraud_assets.defs import automation
from fraud_assets.defs.features import assets as features
from fraud_assets.defs.ingest import assets as ingest
from fraud_assets.defs.online import assets as online
from fraud_assets.defs.publishing import assets as publishing
from fraud_assets.defs.resources import get_resources
from fraud_assets.defs.scoring import assets as scoring
from fraud_assets.defs.training import assets as training
from fraud_assets.defs.training import checks as training_checks

ASSETS: list[dg.AssetsDefinition] = [
    a
    for a in dg.load_assets_from_modules([ingest, features, training, publishing, scoring, online])
    if isinstance(a, dg.AssetsDefinition)
]
CHECKS = list(dg.load_asset_checks_from_modules([training_checks]))

defs = dg.Definitions.merge(
    dg.Definitions(assets=ASSETS, asset_checks=CHECKS, resources=get_resources()),
    automation.defs,
)
