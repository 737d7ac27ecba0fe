"""Liveness and readiness, on the Open Inference Protocol v2 paths."""

from __future__ import annotations

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec

from serving.deps import Services


class Live(msgspec.Struct, frozen=True):
    live: bool


class Readiness(msgspec.Struct, frozen=True, omit_defaults=True):
    ready: bool
    model: str = ""
    """The served model, `name:version`."""
    canary: str = ""
    """The canary, `name:version@share`, when one answers a share of cards."""
    challenger: str = ""
    """The challenger scoring in shadow, `name:version`, when one is published."""
    last_refused_model: str = ""
    """Why the newest published model was refused, when it was."""
    decision_log: str = ""
    """"connected", or why decisions are not reaching Kafka (stalled, or unavailable and
    dropped: the service serves on without Kafka); empty when the decision log is off."""


class HealthController(Controller):
    path = "/v2/health"
    tags = ["health"]  # noqa: RUF012 (Litestar reads it as a class attribute)

    @get("/live", operation_id="live", name="live")
    async def live(self) -> Live:
        """The process is serving."""
        return Live(True)

    @get(
        "/ready", operation_id="ready", name="ready",
        responses={503: ResponseSpec(Readiness, description="No valid model is loaded yet.",
                                     generate_examples=False)},
    )  # fmt: skip
    async def ready(self, services: NamedDependency[Services]) -> Response[Readiness]:
        """Ready only while a valid model is loaded (503 otherwise)."""
        models = services.models
        served = models.served
        log = services.scoring.decision_log
        body = Readiness(
            ready=models.ready,
            model=served.champion.bundle.label if served else "",
            canary=f"{served.canary.bundle.label}@{served.canary_share:g}"
            if served and served.canary
            else "",
            challenger=served.shadow.bundle.label if served and served.shadow else "",
            last_refused_model=models.last_error,
            decision_log="" if log is None else log.status(),
        )
        return Response(body, status_code=200 if models.ready else 503)
