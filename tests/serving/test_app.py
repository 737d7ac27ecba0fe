"""The REST scorer: endpoints, bad payloads, readiness, hot swap — on a real model store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import onnx
import pytest
from litestar.testing import TestClient

from fraud_core.bundle import ModelBundle, bundle_from_bytes, make_bundle
from fraud_core.features import arrow_columns, feature_matrix
from fraud_core.inference import Scorer
from fraud_core.model_store import ModelStore
from fraud_core.schema import Transaction, decode_json, transactions_to_arrow
from fraud_core.state import replay
from fraud_devtools.processes import wait_until
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import SAMPLE_TRANSACTION

pytestmark = pytest.mark.unit

TXN = SAMPLE_TRANSACTION


def versioned(bundle: ModelBundle, version: str, **changes: object) -> ModelBundle:
    model = onnx.load_model_from_string(bundle.onnx_bytes)
    meta = msgspec.structs.replace(bundle.metadata, version=version, **changes)
    if changes:  # an invalid bundle: embed without validating
        model.metadata_props[0].value = msgspec.json.encode(meta).decode()
        return bundle_from_bytes(model.SerializeToString())
    return make_bundle(model, meta)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture
def client_for(store: ModelStore) -> Iterator[Callable[..., TestClient]]:  # type: ignore[type-arg]
    clients = []

    def make(**settings: object) -> TestClient:  # type: ignore[type-arg]
        config = ServingSettings(
            model_store_dir=str(store.root), model_poll_seconds=0.02, **settings
        )  # type: ignore[arg-type]
        client = TestClient(create_app(config))
        clients.append(client)
        return client.__enter__()

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def test_score_answers_with_the_model_version_decision_and_reasons(
    store, client_for, trained
) -> None:  # type: ignore[no-untyped-def]
    store.publish(versioned(trained.bundle, "v1"))
    client = client_for()
    body = client.post("/v1/score", content=msgspec.json.encode(TXN)).json()
    assert body["transaction_id"] == "t-1"
    assert body["model_version"] == "v1"
    assert body["decision"] == ("alert" if body["score"] >= body["threshold"] else "allow")
    assert len(body["reasons"]) == 3
    assert body["cached"] is False


def test_rest_score_equals_the_reference_path_for_a_card_without_history(
    store, client_for, trained
) -> None:  # type: ignore[no-untyped-def]
    store.publish(versioned(trained.bundle, "v1"))
    client = client_for()
    got = client.post("/v1/score", content=msgspec.json.encode(TXN)).json()["score"]
    table = transactions_to_arrow([decode_json(msgspec.json.encode(TXN), Transaction)])
    expected = Scorer(trained.bundle).score(
        feature_matrix({**arrow_columns(table), **replay(table)}, trained.bundle.metadata.contract)
    )
    assert got == pytest.approx(float(expected[0]), abs=0)


def test_batch_scores_equal_single_scores_in_order(store, client_for, trained) -> None:  # type: ignore[no-untyped-def]
    store.publish(versioned(trained.bundle, "v1"))
    client = client_for()
    txns = [{**TXN, "transaction_id": f"t-{i}", "amount": 10.0 * (i + 1)} for i in range(5)]
    batch = client.post(
        "/v1/score/batch", content=msgspec.json.encode({"transactions": txns})
    ).json()
    singles = [
        client.post("/v1/score", content=msgspec.json.encode(t)).json()["score"] for t in txns
    ]
    assert [s["transaction_id"] for s in batch["scores"]] == [t["transaction_id"] for t in txns]
    assert [s["score"] for s in batch["scores"]] == singles


def test_the_fast_lane_answers_as_the_litestar_handler_does(store, client_for, trained) -> None:  # type: ignore[no-untyped-def]
    # serving/lane.py answers bodies with a Content-Length; a chunked body (no length) goes to
    # the Litestar handler. Both must give the same answer, headers and all.
    store.publish(versioned(trained.bundle, "v1"))
    client = client_for(cache_enabled=False)
    payload = msgspec.json.encode(TXN)
    lane = client.post("/v1/score", content=payload)
    handler = client.post("/v1/score", content=iter([payload]))
    assert "content-length" not in handler.request.headers
    assert lane.status_code == handler.status_code == 200
    assert lane.headers["content-type"] == handler.headers["content-type"]

    def answer(response):  # type: ignore[no-untyped-def]
        return {k: v for k, v in response.json().items() if k != "server_time_us"}

    assert answer(lane) == answer(handler)
    assert lane.json()["server_time_us"] > 0


BAD = [
    (b'{"amount": ', 400, "malformed_json", ""),
    (b"[]", 422, "invalid_field", ""),
    (msgspec.json.encode({**TXN, "amount": -5}), 422, "invalid_field", "amount"),
    (msgspec.json.encode({**TXN, "amount": 1e12}), 422, "invalid_field", "amount"),
    (msgspec.json.encode({**TXN, "amount": "12"}), 422, "invalid_field", "amount"),
    (b'{"amount": NaN}', 400, "malformed_json", ""),
    (
        msgspec.json.encode({**TXN, "timestamp": "2026-01-20T03:12:00"}),
        422,
        "invalid_field",
        "timestamp",
    ),
    (
        msgspec.json.encode({k: v for k, v in TXN.items() if k != "card_id"}),
        422,
        "invalid_field",
        "card_id",
    ),
    (msgspec.json.encode({**TXN, "channel": ""}), 422, "invalid_field", "channel"),
]


@pytest.mark.parametrize(("payload", "status", "code", "field"), BAD)
def test_bad_payloads_get_a_4xx_naming_the_field(
    store, client_for, trained, payload, status, code, field
) -> None:  # type: ignore[no-untyped-def]
    store.publish(versioned(trained.bundle, "v1"))
    client = client_for()
    for body in (payload, iter([payload])):  # through the fast lane, and straight to Litestar
        response = client.post("/v1/score", content=body)
        assert response.status_code == status
        error = response.json()["error"]
        assert error["code"] == code
        assert error["field"] == field
        assert error["message"]


@pytest.mark.parametrize("route", ["/v1/score", "/v2/models/fraud-lightgbm/infer"])
def test_a_body_not_declared_as_json_is_415_in_the_error_shape(
    store, client_for, trained, route
) -> None:  # type: ignore[no-untyped-def]
    store.publish(versioned(trained.bundle, "v1"))
    client = client_for()
    payload = msgspec.json.encode(TXN)
    for body in (payload, iter([payload])):  # through the fast lane, and straight to Litestar
        wrong = client.post(route, content=body, headers={"content-type": "text/plain"})
        assert wrong.status_code == 415
        error = wrong.json()["error"]
        code = error["code"] if isinstance(error, dict) else wrong.json()["code"]
        assert code == "unsupported_media_type"
    typed = client.post(
        "/v1/score", content=payload, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert typed.status_code == 200


def test_batch_limits_and_paths_of_bad_items(store, client_for, trained) -> None:  # type: ignore[no-untyped-def]
    store.publish(versioned(trained.bundle, "v1"))
    client = client_for(max_batch_transactions=3)
    too_many = client.post(
        "/v1/score/batch", content=msgspec.json.encode({"transactions": [TXN] * 4})
    )
    assert (too_many.status_code, too_many.json()["error"]["code"]) == (422, "too_many")
    bad_item = [TXN, {**TXN, "amount": -1}]
    response = client.post(
        "/v1/score/batch", content=msgspec.json.encode({"transactions": bad_item})
    )
    assert response.json()["error"]["field"] == "transactions[1].amount"
    empty = client.post("/v1/score/batch", content=b'{"transactions": []}')
    assert empty.status_code == 422


def test_transport_errors_share_the_error_shape(store, client_for, trained) -> None:  # type: ignore[no-untyped-def]
    store.publish(versioned(trained.bundle, "v1"))
    client = client_for(max_body_bytes=2000)
    assert client.get("/v1/nope").json()["error"]["code"] == "not_found"
    assert client.get("/v1/score").json()["error"]["code"] == "method_not_allowed"
    huge = client.post("/v1/score", content=b"{" + b" " * 5000 + b"}")
    assert (huge.status_code, huge.json()["error"]["code"]) == (413, "too_large")


def test_not_ready_until_a_model_is_published_then_ready(store, client_for, trained) -> None:  # type: ignore[no-untyped-def]
    client = client_for()
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 503
    refused = client.post("/v1/score", content=msgspec.json.encode(TXN))
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "model_not_ready")
    store.publish(versioned(trained.bundle, "v1"))
    wait_until(lambda: client.get("/v2/health/ready").status_code == 200, "ready", 10)
    assert client.post("/v1/score", content=msgspec.json.encode(TXN)).status_code == 200


def test_a_new_publication_is_swapped_in_and_a_bad_one_refused(store, client_for, trained) -> None:  # type: ignore[no-untyped-def]
    store.publish(versioned(trained.bundle, "v1"))
    client = client_for()

    def version() -> str:
        return str(
            client.post("/v1/score", content=msgspec.json.encode(TXN)).json()["model_version"]
        )

    assert version() == "v1"
    store.publish(versioned(trained.bundle, "v2"))
    wait_until(lambda: version() == "v2", "v2 served", 10)
    store.add(versioned(trained.bundle, "v3-bad", feature_version="0.old"))
    store.point_to("v3-bad")
    wait_until(
        lambda: "v3-bad" in client.get("/v2/health/ready").json().get("last_refused_model", ""),
        "v3-bad refused", 10,
    )  # fmt: skip
    assert version() == "v2"
    assert client.get("/v2/health/ready").status_code == 200


def test_the_openapi_document_describes_routes_and_request_bodies(store, client_for) -> None:  # type: ignore[no-untyped-def]
    client = client_for()
    assert client.get("/docs").status_code == 200
    paths = client.get("/docs/openapi.json").json()["paths"]
    assert {"/v1/score", "/v1/score/batch", "/v2/models/{model_name}/infer"} <= set(paths)

    def body(path: str) -> dict:  # type: ignore[type-arg]
        request = paths[path]["post"]["requestBody"]
        assert request["required"] is True
        return request["content"]["application/json"]["schema"]  # type: ignore[no-any-return]

    transaction = body("/v1/score")
    assert set(transaction["required"]) >= {"transaction_id", "card_id", "amount", "timestamp"}
    assert transaction["properties"]["amount"]["type"] == "number"
    assert body("/v1/score/batch")["properties"]["transactions"]["items"] == transaction
    assert "inputs" in body("/v2/models/{model_name}/infer")["properties"]


def test_settings_come_from_the_environment() -> None:
    settings = ServingSettings.from_env(
        {"FRAUD_SERVING_PORT": "9001", "FRAUD_SERVING_REASONS": "5"}
    )
    assert (settings.port, settings.reasons) == (9001, 5)
    with pytest.raises(ValueError, match="FRAUD_SERVING_"):
        ServingSettings.from_env({"FRAUD_SERVING_PORT": "eighty"})


def test_metrics_count_requests_by_route_and_show_the_model(store, client_for, trained) -> None:  # type: ignore[no-untyped-def]
    store.publish(versioned(trained.bundle, "v7"))
    client = client_for()
    for i in range(3):
        client.post("/v1/score", content=msgspec.json.encode({**TXN, "transaction_id": f"m{i}"}))
    client.post("/v1/score", content=b"{")
    text = client.get("/metrics").text
    assert 'fraudscale_requests_total{route="score",status="200"} 3.0' in text
    assert 'fraudscale_requests_total{route="score",status="400"} 1.0' in text
    assert 'fraudscale_model_info{name="fraud-lightgbm",role="champion",version="v7"} 1.0' in text
    assert "fraudscale_inference_batch_size_count 3.0" in text
    assert 'fraudscale_request_seconds_count{route="score"} 4.0' in text
    client.post("/v1/score", content=msgspec.json.encode({**TXN, "transaction_id": "m0"}))
    text = client.get("/metrics").text
    assert 'fraudscale_cache_hits_total{level="l1"} 1.0' in text
    assert "fraudscale_cache_misses_total 3.0" in text


def test_api_keys_scopes_and_rate_limits(store, client_for, trained) -> None:  # type: ignore[no-untyped-def]
    store.publish(versioned(trained.bundle, "v1"))
    client = client_for(
        api_keys="s3cret:score,reader:infer", rate_limit_per_second=1.0, rate_limit_burst=2.0
    )
    payload = msgspec.json.encode(TXN)
    missing = client.post("/v1/score", content=payload)
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "unauthorized")
    wrong = client.post("/v1/score", content=payload, headers={"X-API-Key": "guess"})
    assert wrong.status_code == 401
    no_scope = client.post("/v1/score", content=payload, headers={"X-API-Key": "reader"})
    assert (no_scope.status_code, no_scope.json()["error"]["code"]) == (403, "forbidden")
    # A request admitted by the fast lane that Litestar then answers (a bad body) is charged
    # once: the burst of 2 leaves room for exactly one more.
    allowed = [
        client.post("/v1/score", content=body, headers={"X-API-Key": "s3cret"})
        for body in (b"{", payload)
    ]
    assert [r.status_code for r in allowed] == [400, 200]
    limited = client.post("/v1/score", content=payload, headers={"X-API-Key": "s3cret"})
    assert (limited.status_code, limited.json()["error"]["code"]) == (429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1
    assert client.get("/v2/health/live").status_code == 200  # health stays open


def test_bad_api_key_settings_are_refused() -> None:
    from serving.auth import parse_api_keys

    assert parse_api_keys("a:score+infer, b:score") == {"a": {"score", "infer"}, "b": {"score"}}
    assert parse_api_keys("") == {}
    with pytest.raises(ValueError, match="unknown scopes"):
        parse_api_keys("a:admin")


def test_a_request_is_traced_through_cache_state_features_and_inference(store, trained) -> None:  # type: ignore[no-untyped-def]
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    store.publish(versioned(trained.bundle, "v1"))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = ServingSettings(model_store_dir=str(store.root))
    with TestClient(create_app(settings, tracer_provider=provider)) as client:
        assert client.post("/v1/score", content=msgspec.json.encode(TXN)).status_code == 200
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {"cache_lookup", "online_state", "features", "inference"} <= set(spans)
    assert spans["inference"].attributes["model.version"] == "v1"


def test_logs_are_one_json_object_per_line() -> None:
    import logging

    from serving.telemetry import JsonFormatter

    record = logging.LogRecord("serving", logging.WARNING, __file__, 1, "refused %s", ("v3",), None)
    entry = msgspec.json.decode(JsonFormatter().format(record))
    assert (entry["level"], entry["logger"], entry["message"]) == (
        "WARNING",
        "serving",
        "refused v3",
    )
    assert entry["time"].endswith("Z")
