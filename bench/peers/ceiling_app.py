"""The REST ceiling: the framework and server fraudscale runs on, doing nothing but what every
scoring request must: a Litestar route that decodes the body into a Transaction with msgspec
and returns a constant answer, under the same uvicorn settings as `python -m serving.app`
(access log off, uvicorn's default loop and HTTP parser). `python -m bench.peers.ceiling_app`,
port from FRAUD_SERVING_PORT."""

from __future__ import annotations

import os

import msgspec
from litestar import Litestar, Request, Response, get, post

from fraud_core.schema import Transaction

_decode = msgspec.json.Decoder(Transaction).decode
_ANSWER = msgspec.json.encode(
    {"transaction_id": "", "score": 0.0, "decision": "allow", "threshold": 0.5,
     "model_name": "ceiling", "model_version": "0", "reasons": []}
)  # fmt: skip


@post("/v1/score", status_code=200)
async def score(request: Request) -> Response[bytes]:
    _decode(await request.body())
    return Response(_ANSWER, media_type="application/json")


@get("/v2/health/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


def create_app() -> Litestar:
    return Litestar(route_handlers=[score, ready], openapi_config=None)


def main() -> None:
    import uvicorn

    port = int(os.environ.get("FRAUD_SERVING_PORT", "8000"))
    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
