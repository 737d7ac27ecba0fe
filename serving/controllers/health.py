"""Liveness and readiness, on the Open Inference Protocol v2 paths."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency

from serving.deps import Services


class HealthController(Controller):
    path = "/v2/health"
    tags = ["health"]  # noqa: RUF012 (Litestar reads it as a class attribute)

    @get("/live", operation_id="live", name="live")
    async def live(self) -> dict[str, bool]:
        """The process is serving."""
        return {"live": True}

    @get("/ready", operation_id="ready", name="ready")
    async def ready(self, services: NamedDependency[Services]) -> Response[dict[str, object]]:
        """Ready only while a valid model is loaded (503 otherwise)."""
        models = services.models
        body: dict[str, object] = {"ready": models.ready}
        if models.current is not None:
            body["model"] = models.current.bundle.label
        if models.last_error:
            body["last_refused_model"] = models.last_error
        return Response(body, status_code=200 if models.ready else 503)
