"""The serving image, built with buildah and run with `buildah run --isolation chroot` (no
container runtime starts here): the REST role answers from inside it on loopback."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from fraud_core.model_store import ModelStore
from fraud_devtools.images import build, image_name
from fraud_devtools.processes import LocalProcess, free_port, start_process, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("buildah") is None, reason="make test installs buildah"),
]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def inspect(image: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        ["buildah", "inspect", "--type", "image", image], capture_output=True, check=True
    ).stdout
    return json.loads(out)["OCIv1"]["config"]  # type: ignore[no-any-return]


def run_in(image: str, script: str, user: str = "0:0") -> str:
    """What `sh -c script` prints in a fresh container of `image` as `user` (root by
    default: it may look everywhere), the container removed afterwards."""
    name = subprocess.run(
        ["buildah", "from", image], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        return subprocess.run(
            ["buildah", "run", "--isolation", "chroot", "--user", user, name, "sh", "-c", script],
            capture_output=True, text=True, check=False, timeout=60,
        ).stdout  # fmt: skip
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True, check=False)


class Container(LocalProcess):
    """`buildah run` of a working container. buildah does not pass SIGTERM on to what runs
    inside, so stopping signals the whole session the run started in (tini, the service)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def stop(self, timeout: float = 30) -> float:
        if self.process is None:
            return 0.0
        session = str(self.process.pid)  # start_process starts it in a session of its own

        def gone() -> bool:
            return subprocess.run(["pgrep", "-s", session], capture_output=True).returncode != 0

        subprocess.run(["pkill", "--signal", "TERM", "-s", session], check=False)
        try:
            wait_until(gone, "the container's processes to exit", timeout)
        except TimeoutError:
            subprocess.run(["pkill", "--signal", "KILL", "-s", session], check=False)
        self.process.wait(timeout=10)
        self.process = None
        return 0.0

    def remove(self) -> None:
        subprocess.run(["buildah", "rm", self.name], capture_output=True, check=False)


@pytest.fixture(scope="module")
def image() -> str:
    return build("serving")


@pytest.fixture
def rest(image: str, tmp_path: Path, trained) -> Iterator[str]:  # type: ignore[no-untyped-def]
    store = ModelStore(tmp_path / "models")
    store.publish(trained.bundle)
    subprocess.run(["chmod", "-R", "a+rX", str(tmp_path)], check=True)  # the image's user
    name = subprocess.run(
        ["buildah", "from", image], capture_output=True, text=True, check=True
    ).stdout.strip()
    container = Container(name)
    config = inspect(image)
    port = free_port()
    try:
        container.process = start_process(
            ["buildah", "run", "--isolation", "chroot", "-v", f"{store.root}:/models:ro",
             "--env", f"FRAUD_SERVING_PORT={port}", name,
             *config["Entrypoint"], *config["Cmd"]],
            "the REST role in its image",
            lambda: get(f"http://127.0.0.1:{port}/v2/health/live")[0] == 200,
            120, log=tmp_path / "container.log",
        )  # fmt: skip
        yield f"http://127.0.0.1:{port}"
    finally:
        container.stop(timeout=20)
        container.remove()


def test_the_image_runs_the_rest_role_as_a_non_root_user_behind_tini(image: str) -> None:
    config = inspect(image)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/usr/bin/tini", "--"]
    assert config["Cmd"] == ["python", "-m", "serving.app"]
    assert "PYTHONDONTWRITEBYTECODE=1" in config["Env"]
    assert image == image_name("serving")
    listing = run_in(
        image,
        "ls /usr/bin/gcc /usr/bin/cc /usr/local/bin/uv /root/.cache/uv /tmp/uv-cache 2>&1;"
        " python -c 'import lightgbm' 2>&1 | tail -1",
    )
    assert listing.count("No such file or directory") == 5  # no compilers, uv or caches
    assert "No module named 'lightgbm'" in listing  # only the serving role's dependencies
    compiled = run_in(image, "python -c 'import fraud_core.rollout as r; print(r.COMPILED)'")
    assert compiled.strip() == "True"  # the decision log's records made by fraud_native


def test_the_rest_role_answers_from_inside_the_image(rest: str, trained) -> None:  # type: ignore[no-untyped-def]
    assert get(f"{rest}/v2/health/live") == (200, b'{"live":true}')
    wait_until(lambda: get(f"{rest}/v2/health/ready")[0] == 200, "the model loaded", 60)
    body = msgspec.json.encode(
        {"transaction_id": "img-1", "card_id": "c-1", "merchant_id": "m-1", "amount": 42.5,
         "currency": "EUR", "merchant_category": "grocery", "channel": "pos", "country": "DE",
         "timestamp": "2026-01-20T12:00:00Z"}
    )  # fmt: skip
    request = urllib.request.Request(
        f"{rest}/v1/score", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        answer = json.load(response)
    assert response.status == 200
    assert 0.0 <= answer["score"] <= 1.0
    assert answer["model_version"] == trained.bundle.metadata.version
