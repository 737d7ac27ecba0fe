"""The model bundle: ONNX bytes plus the metadata every component checks before serving.

The metadata lives inside the ONNX file (`metadata_props`, key `fraudscale`), so a bundle is
one self-describing file: the MLflow artifact, the model store entry and what a server loads
are the same bytes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import msgspec
import onnx

from fraud_core.features import (
    CATEGORICAL_COLUMNS,
    FEATURE_NAMES,
    FEATURE_VERSION,
    N_FEATURES,
    DataContract,
    empty_contract,
)

METADATA_KEY = "fraudscale"


class BundleMetadata(msgspec.Struct, frozen=True, kw_only=True):
    """What a model promises about itself."""

    name: str
    version: str
    feature_version: str
    feature_names: tuple[str, ...]
    threshold: float
    """Scores at or above this are alerts."""
    metrics: dict[str, float] = msgspec.field(default_factory=dict)
    feature_means: tuple[float, ...] = ()
    """Per feature, its mean over the training data: the baseline that reasons compare with."""
    feature_scales: tuple[float, ...] = ()
    """Per feature, its standard deviation over the training data (0 for a constant)."""
    feature_importance: tuple[float, ...] = ()
    """Per feature, its share of the model's total split gain."""
    trained_at: str = ""
    family: str = "lightgbm"
    contract: DataContract = msgspec.field(default_factory=empty_contract)
    """Vocabularies and label delay learnt from the training data: every path encodes and
    derives label times with these (a bundle without one knows no categorical value)."""


class BundleError(ValueError):
    """A bundle that cannot be served: unreadable, or built for other features."""


class ModelBundle(msgspec.Struct, frozen=True):
    onnx_bytes: bytes
    metadata: BundleMetadata

    @property
    def label(self) -> str:
        return f"{self.metadata.name}:{self.metadata.version}"


_meta_decoder = msgspec.json.Decoder(BundleMetadata)


def make_bundle(model: onnx.ModelProto, metadata: BundleMetadata) -> ModelBundle:
    """Embed the metadata in the ONNX model and validate the result."""
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = msgspec.json.encode(metadata).decode()
    bundle = ModelBundle(model.SerializeToString(), metadata)
    validate_bundle(bundle)
    return bundle


def as_version(bundle: ModelBundle, version: str) -> ModelBundle:
    """The same model under another version (benchmarks and tests give one model two roles)."""
    metadata = msgspec.structs.replace(bundle.metadata, version=version)
    return make_bundle(onnx.load_model_from_string(bundle.onnx_bytes), metadata)


def bundle_from_bytes(data: bytes) -> ModelBundle:
    """Parse ONNX bytes into a bundle, refusing one without fraudscale metadata."""
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:
        raise BundleError(f"not an ONNX model: {exc}") from None
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise BundleError(f"ONNX model has no {METADATA_KEY!r} metadata: not a fraudscale bundle")
    try:
        metadata = _meta_decoder.decode(props[METADATA_KEY])
    except msgspec.MsgspecError as exc:
        raise BundleError(f"bundle metadata is invalid: {exc}") from None
    return ModelBundle(data, metadata)


def validate_bundle(bundle: ModelBundle, *, label_delay_us: int | None = None) -> None:
    """Refuse a bundle whose features differ from this build's contract, saying how; with
    `label_delay_us`, also one trained on labels known after another delay than that (the
    features it would be given derive label times with `label_delay_us`)."""
    meta = bundle.metadata
    problems = []
    contract = meta.contract
    if set(contract.vocabularies) != set(CATEGORICAL_COLUMNS):
        problems.append(
            f"vocabularies for {sorted(contract.vocabularies)}, "
            f"expected {sorted(CATEGORICAL_COLUMNS)}"
        )
    if contract.label_delay_us <= 0:
        problems.append(f"label delay {contract.label_delay_us} us is not positive")
    elif label_delay_us is not None and contract.label_delay_us != label_delay_us:
        problems.append(
            f"trained with a label delay of {contract.label_delay_us / 86_400e6:g} days, "
            f"features here use {label_delay_us / 86_400e6:g}"
        )
    if meta.feature_version != FEATURE_VERSION:
        problems.append(
            f"feature version {meta.feature_version!r} differs from ours {FEATURE_VERSION!r}"
        )
    if tuple(meta.feature_names) != FEATURE_NAMES:
        missing = [n for n in FEATURE_NAMES if n not in meta.feature_names]
        extra = [n for n in meta.feature_names if n not in FEATURE_NAMES]
        detail = f"missing {missing}, unexpected {extra}" if missing or extra else "other order"
        problems.append(f"feature names differ ({detail})")
    if not 0.0 <= meta.threshold <= 1.0:
        problems.append(f"threshold {meta.threshold} is outside [0, 1]")
    for field in ("feature_means", "feature_scales", "feature_importance"):
        values = getattr(meta, field)
        if values and len(values) != N_FEATURES:
            problems.append(f"{field} has {len(values)} values for {N_FEATURES} features")
    model = onnx.load_model_from_string(bundle.onnx_bytes)
    inputs = model.graph.input
    if len(inputs) != 1:
        problems.append(f"model has {len(inputs)} inputs, expected one feature tensor")
    else:
        dims = inputs[0].type.tensor_type.shape.dim
        width = dims[-1].dim_value if dims else 0
        if width != N_FEATURES:
            problems.append(f"model input has width {width}, expected {N_FEATURES}")
    if problems:
        raise BundleError(f"model {bundle.label} refused: " + "; ".join(problems))


def write_bundle(bundle: ModelBundle, path: str | os.PathLike[str]) -> Path:
    """Write atomically: readers see the old file or the whole new one, never a part."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(bundle.onnx_bytes)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    return target


def read_bundle(path: str | os.PathLike[str], *, validate: bool = True) -> ModelBundle:
    """Read a bundle file; by default refuse it unless it matches this build's features."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read model bundle {path}: {exc}") from None
    bundle = bundle_from_bytes(data)
    if validate:
        validate_bundle(bundle)
    return bundle
