"""Sample sets for calibration: a .npz of stacked samples, or a folder of one-sample .npy/.npz files.

A stacked array may hold N samples of the model's input shape (`N x shape`) or a multiple of its batch
(`N*b x ...` for an input of batch b); each sample is checked against the signature. An array named
`labels` (one class per sample) is kept aside: with it, the quantizer's accuracy check uses real accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .signature import Signature, TensorSpec

LABELS = "labels"


@dataclass
class SampleSet:
    samples: list[list[np.ndarray]]  # per sample: arrays in the signature's input order
    labels: np.ndarray | None = None  # one label per sample, when given


def _split(array: np.ndarray, spec: TensorSpec, source: str) -> list[np.ndarray]:
    shape = tuple(spec.shape)
    if array.shape == shape:
        return [array]
    if array.ndim == len(shape) + 1 and array.shape[1:] == shape:
        return list(array)
    if shape and array.ndim == len(shape) and array.shape[1:] == shape[1:] and array.shape[0] % shape[0] == 0:
        return list(array.reshape(-1, *shape))
    raise UserError(f"{source}: '{spec.name}' has shape {list(array.shape)}; expected {list(shape)} or "
                    f"N x {list(shape)} for N samples")


def _arrays_for(named: dict[str, np.ndarray], signature: Signature, source: str) -> list[list[np.ndarray]]:
    inputs = signature.inputs
    if len(inputs) == 1 and len(named) == 1:
        named = {inputs[0].name: next(iter(named.values()))}
    missing = [s.name for s in inputs if s.name not in named]
    if missing:
        raise UserError(f"{source} has no array for input(s) {', '.join(missing)}; name the arrays after the "
                        f"model's inputs ({', '.join(s.name for s in inputs)})")
    per_input = [_split(np.asarray(named[s.name]).astype(s.dtype, copy=False), s, source) for s in inputs]
    counts = {len(p) for p in per_input}
    if len(counts) != 1:
        raise UserError(f"{source}: the inputs hold different numbers of samples ({sorted(counts)})")
    return [list(sample) for sample in zip(*per_input)]


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        if path.suffix == ".npy":
            return {path.stem: np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read calibration data {path}: {exc}") from None


def load_samples(path: str | Path, signature: Signature) -> SampleSet:
    """Read calibration samples for `signature` from a .npz file or a folder of .npy/.npz files."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz"))
        if not files:
            raise UserError(f"calibration folder {path} has no .npy or .npz files")
        samples, labels = [], []
        for file in files:
            named = _read(file)
            if LABELS in named:
                labels.append(np.asarray(named.pop(LABELS)).reshape(-1))
            samples.extend(_arrays_for(named, signature, str(file)))
        label_array = np.concatenate(labels) if labels else None
    elif path.is_file():
        named = _read(path)
        label_array = np.asarray(named.pop(LABELS)).reshape(-1) if LABELS in named else None
        samples = _arrays_for(named, signature, str(path))
    else:
        raise UserError(f"calibration data {path} does not exist; give a .npz file or a folder of .npy/.npz files")
    if label_array is not None and len(label_array) != len(samples):
        raise UserError(f"{path}: {len(label_array)} labels for {len(samples)} samples")
    if not samples:
        raise UserError(f"calibration data {path} holds no samples")
    return SampleSet(samples, label_array)
