"""`fraudscale-models`: list registered models and roles, publish a candidate as challenger
(shadow) or canary, start, end, promote or abort a canary, roll the champion back."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table

from fraud_assets.defs.resources import resources_for, rollout_of
from fraud_assets.lib.registry import BUNDLE_VERSION_TAG, CHAMPION_ALIAS, roll_back
from fraud_assets.lib.rollout import CANDIDATE_ROLES, Rollout
from fraud_assets.settings import AssetSettings
from fraud_core.bundle import BundleError, read_bundle
from fraud_core.rollout import CANARY, CHALLENGER

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
    plan = resources["storage"].model_store.plan()
    console.print(
        f"local store: champion {plan.champion}, canary {plan.canary or '-'}"
        f"{f' at {plan.canary_share:.1%} of cards' if plan.canary else ''}, "
        f"challenger {plan.challenger or '-'}"
    )
    return 0


def rollout_from_env() -> Rollout:
    resources = resources_for(AssetSettings.from_env())
    return rollout_of(resources["storage"], resources["mlflow_tracking"])


def _publish(args: argparse.Namespace) -> int:
    version = rollout_from_env().publish(
        read_bundle(args.bundle), args.role, share=args.share, reason=args.reason
    )
    console.print(f"{version} is now {args.role}")
    return 0


def _canary(args: argparse.Namespace) -> int:
    rollout_from_env().start_canary(args.version, args.share, args.reason)
    console.print(f"canary {args.version} answers {args.share:.1%} of cards")
    return 0


def _step(step: str, done: str) -> Callable[[argparse.Namespace], int]:
    """A command taking a role through one rollout step (end, abort, promote)."""

    def run(args: argparse.Namespace) -> int:
        version = getattr(rollout_from_env(), step)(args.role, reason=args.reason)
        console.print(f"{args.role} {version or '(none)'} {done}")
        return 0

    return run


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
    publish = commands.add_parser("publish", help="add a candidate bundle as challenger or canary")
    publish.add_argument("bundle", help="a fraudscale bundle (.onnx)")
    publish.add_argument("--role", choices=CANDIDATE_ROLES, default=CHALLENGER)
    publish.add_argument("--share", type=float, default=0.0, help="canary's share of cards")
    publish.set_defaults(run=_publish)
    canary = commands.add_parser("canary", help="give a stored version a share of cards")
    canary.add_argument("version", help="bundle version (in the model store)")
    canary.add_argument("--share", type=float, required=True)
    canary.set_defaults(run=_canary)
    for name, run, help_text in (
        ("end", _step("end", "ended"), "end a role (the champion answers every card again)"),
        ("abort", _step("abort", "aborted"), "abort a canary or challenger (recorded)"),
        ("promote", _step("promote", "promoted to champion"), "make the canary champion"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--role", choices=CANDIDATE_ROLES, default=CANARY)
        command.set_defaults(run=run)
    for command in commands.choices.values():
        if command.prog.split()[-1] not in ("list", "rollback"):
            command.add_argument("--reason", default="", help="recorded in MLflow")
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (BundleError, ValueError) as exc:  # a refused model or a wrong step: say why
        console.print(f"[red]{args.command}: {exc}[/red]")
        return 2


if __name__ == "__main__":
    sys.exit(main())
