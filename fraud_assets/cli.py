"""`fraudscale-models`: list registered models, roll the champion back."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from fraud_assets.defs.resources import resources_for
from fraud_assets.lib.registry import BUNDLE_VERSION_TAG, CHAMPION_ALIAS, roll_back
from fraud_assets.settings import AssetSettings

console = Console()


def _list(_: argparse.Namespace) -> int:
    resources = resources_for(AssetSettings.from_env())
    tracking = resources["mlflow_tracking"]
    client = tracking.client()
    table = Table(title=f"registered model {tracking.registered_model}")
    for name in ("version", "bundle version", "alias", "run", "PR-AUC"):
        table.add_column(name)
    versions = client.search_model_versions(f"name='{tracking.registered_model}'")
    for version in sorted(versions, key=lambda v: int(v.version)):
        run = client.get_run(version.run_id) if version.run_id else None
        pr_auc = run.data.metrics.get("pr_auc") if run else None
        table.add_row(
            str(version.version),
            version.tags.get(BUNDLE_VERSION_TAG, ""),
            ", ".join(version.aliases),
            version.run_id or "",
            f"{pr_auc:.4f}" if pr_auc is not None else "",
        )
    console.print(table)
    console.print(f"local store champion: {resources['storage'].model_store.champion_version()}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    resources = resources_for(AssetSettings.from_env())
    tracking = resources["mlflow_tracking"]
    champion = roll_back(
        tracking.client(), tracking.registered_model, args.version, resources["storage"].model_store
    )
    console.print(
        f"{CHAMPION_ALIAS} -> registry version {champion.registry_version} "
        f"(bundle {champion.bundle_version}); servers pick it up from the store pointer"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fraudscale-models", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "list", help="registered versions, their bundles and the champion"
    ).set_defaults(run=_list)
    rollback = commands.add_parser("rollback", help="make an earlier registry version champion")
    rollback.add_argument("version", help="MLflow registry version number")
    rollback.set_defaults(run=_rollback)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
