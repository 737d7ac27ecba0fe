"""fraudscale's OCI images, built with buildah on a base made from Debian's packages.

No registry is reachable here and no container can start with podman (the sandbox refuses
crun's setrlimit), but `buildah bud --isolation chroot` builds and `buildah run --isolation
chroot` runs. The base is debootstrapped Debian 12 (python3, ca-certificates, tini), made
once per machine and kept in buildah's local storage.

    python -m fraud_devtools.images base            # the base, when missing
    python -m fraud_devtools.images build [ROLE...]  # serving, streaming, assets
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
BASE = "localhost/fraudscale-base:bookworm"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "ca-certificates", "tini")
ROLES = ("serving", "streaming", "assets")


def version() -> str:
    import tomllib

    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def image_name(role: str) -> str:
    return f"localhost/fraudscale-{role}:{version()}"


def _buildah(*args: str, capture: bool = False) -> str:
    if shutil.which("buildah") is None:
        raise FileNotFoundError("buildah is missing: apt-get install buildah (make test does)")
    done = subprocess.run(["buildah", *args], check=True, text=True, capture_output=capture)
    return done.stdout if capture else ""


def _has(image: str) -> bool:
    return (
        subprocess.run(
            ["buildah", "inspect", "--type", "image", image], capture_output=True, check=False
        ).returncode
        == 0
    )


def base() -> str:
    """The base image, debootstrapped and imported when missing (about a minute)."""
    if _has(BASE):
        return BASE
    if shutil.which("debootstrap") is None:
        raise FileNotFoundError("debootstrap is missing: apt-get install debootstrap")
    with tempfile.TemporaryDirectory(prefix="fraudscale-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             SUITE, str(rootfs), MIRROR],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc",
                     "usr/share/man", "usr/share/info", "usr/share/locale"):  # fmt: skip
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
        (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        (rootfs / "etc/apt/sources.list").write_text(f"deb {MIRROR} {SUITE} main\n")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(Path(tmp) / "rootfs.tar"), "."],
                       check=True)  # fmt: skip
        (Path(tmp) / "Containerfile").write_text(
            'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n'
        )
        _buildah("bud", "--isolation", "chroot", "--layers=false", "-t", BASE, tmp)
    return BASE


def native_wheel() -> Path:
    """fraud_native's wheel (the `native` extra), built here with cargo into
    build/native-wheel for the image to install: the image needs no Rust toolchain."""
    out = ROOT / "build" / "native-wheel"
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(
        [str(ROOT / ".tools" / "bin" / "uv"), "build", "--wheel", "--quiet",
         "--out-dir", str(out), str(ROOT / "fraud_native")],
        check=True,
    )  # fmt: skip
    (wheel,) = out.glob("*.whl")
    return wheel


def build(role: str) -> str:
    """The role's image from deploy/Containerfile, on the base; returns its name."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
    if not (ROOT / ".tools" / "bin" / "uv").exists():
        raise FileNotFoundError(".tools/bin/uv is missing: `make install` puts it there")
    name = image_name(role)
    native_wheel()
    trust = []
    bundle = os.environ.get("SSL_CERT_FILE", "")
    if bundle and Path(bundle).is_file():  # the host's CA bundle, for PyPI behind a proxy
        trust = ["-v", f"{Path(bundle).resolve()}:/run/host-ca.crt:ro",
                 "--build-arg", "SSL_CERT_FILE=/run/host-ca.crt"]  # fmt: skip
    _buildah(
        "bud", "--isolation", "chroot", "--layers",
        "-f", str(CONTAINERFILE), "--target", role,
        "--build-arg", f"ROLE={role}", "--build-arg", f"BASE={base()}", *trust,
        "-t", name, str(ROOT),
    )  # fmt: skip
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("base")
    built = sub.add_parser("build")
    built.add_argument("roles", nargs="*", default=list(ROLES))
    args = parser.parse_args()
    if args.command == "base":
        print(base())
    else:
        for role in args.roles:
            print(build(role))


if __name__ == "__main__":
    main()
