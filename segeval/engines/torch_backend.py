"""The torch backend: the same counts as the NumPy backend, on a GPU.

Imported only for ``--device cuda|cuda:N|mps`` or tensors already on a GPU.  Label maps are
counted with ``torch.bincount`` over ``reference * n + prediction`` in chunks (the index in
the smallest integer type that holds n·n values, on the device, no one-hot), and the
resulting counts are brought back as int64 NumPy arrays, so every later step is shared with
the CPU path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from segeval.core.counts import ChannelCounts, Confusion
from segeval.engines.numpy_backend import (
    CHUNK,
    DENSE_BINS,
    _sparse_confusion,
    counts_from_histogram,
    exactly_above,
)
from segeval.errors import UsageError

GPU_CHUNK = CHUNK * 16  # GPUs have memory to spare: 4 Mi voxels per bincount


def check_device(device: str) -> None:
    """Raise a :class:`UsageError` when ``device`` cannot be used here."""
    if device == "mps":
        available = torch.backends.mps.is_available()
    else:
        available = torch.cuda.is_available()
        if available and ":" in device:
            available = int(device.split(":")[1]) < torch.cuda.device_count()
    if not available:
        raise UsageError("E_USAGE", f"--device {device}: no such device on this machine",
                         hint="use --device cpu or auto")


class TorchBackend:
    """Counting with torch on ``device``.  Arrays are tensors on that device."""

    name = "torch"

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)

    def asarray(self, value: Any) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value.detach().to(self.device)
        array = np.asarray(value)
        if not array.dtype.isnative:  # big-endian NIfTI data; torch only takes native order
            array = array.astype(array.dtype.newbyteorder("="))
        if array.dtype == np.uint16 or array.dtype == np.uint32:
            array = array.astype(np.int64)  # no unsigned 16/32-bit ops in torch
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def is_float(self, a: torch.Tensor) -> bool:
        return a.is_floating_point()

    def is_bool(self, a: torch.Tensor) -> bool:
        return a.dtype == torch.bool

    def can_be_negative(self, a: torch.Tensor) -> bool:
        return a.dtype not in (torch.bool, torch.uint8)

    def all_finite(self, a: torch.Tensor) -> bool:
        return bool(torch.isfinite(a).all())

    def is_integer_valued(self, a: torch.Tensor) -> bool:
        return bool((torch.floor(a) == a).all())

    def min_max(self, a: torch.Tensor) -> tuple[float, float]:
        if a.numel() == 0:
            return 0.0, 0.0
        if a.dtype == torch.bool:
            a = a.to(torch.uint8)
        low, high = torch.aminmax(a)
        return low.item(), high.item()

    def unique_labels(self, labels: torch.Tensor) -> set[int]:
        return {int(x) for x in torch.unique(labels).tolist()}

    def is_one_hot0(self, channels: torch.Tensor) -> bool:
        return bool((torch.count_nonzero(channels, dim=0) == 1).all())

    def stack_complement(self, probability: torch.Tensor) -> torch.Tensor:
        return torch.stack([1.0 - probability, probability])

    def to_labels(self, a: torch.Tensor) -> torch.Tensor:
        if a.dtype == torch.bool:
            return a.to(torch.uint8)
        if a.is_floating_point():
            return a.to(torch.int64)
        return a

    def sigmoid(self, a: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(a.to(torch.float64))

    def softmax0(self, a: torch.Tensor) -> torch.Tensor:
        return torch.softmax(a.to(torch.float64), dim=0)

    def above(self, a: torch.Tensor, threshold: float) -> torch.Tensor:
        """``a > threshold`` decided exactly, whatever the float width of ``a``."""
        return exactly_above(a, threshold, torch.tensor(threshold, dtype=a.dtype).item())

    def sweep_counts(self, reference: torch.Tensor, probability: torch.Tensor,
                     thresholds: np.ndarray, valid: torch.Tensor | None) -> np.ndarray:
        """The same as NumpyBackend.sweep_counts: int64 [4, m, C]."""
        m = len(thresholds)
        edges = torch.as_tensor(thresholds, dtype=torch.float64, device=self.device)
        out = []
        for c in range(reference.shape[0]):
            b = torch.searchsorted(edges, probability[c].reshape(-1).to(torch.float64))
            index = reference[c].reshape(-1).to(torch.int64) * (m + 1) + b
            if valid is not None:
                index = torch.where(valid.reshape(-1), index, 2 * (m + 1))
            hist = torch.bincount(index, minlength=2 * (m + 1) + 1).cpu().numpy()
            out.append(counts_from_histogram(hist[:-1].reshape(2, m + 1)))
        return np.stack(out, axis=-1)

    def moveaxis0(self, a: torch.Tensor, axis: int) -> torch.Tensor:
        return torch.movedim(a, axis, 0)

    def permute(self, a: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
        return a.permute(order)

    def scaled(self, a: torch.Tensor, scale: int) -> torch.Tensor:
        """Integer probabilities → float64 ``v / scale``."""
        return a.to(torch.float64) / scale

    def argmax0(self, a: torch.Tensor) -> torch.Tensor:
        """Index of the largest channel; ties go to the lowest index (documented by torch)."""
        return torch.argmax(a, dim=0)

    def one_hot0(self, labels: torch.Tensor, n_channels: int) -> torch.Tensor:
        return torch.stack([labels == c for c in range(n_channels)])

    def zeros(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.uint8, device=self.device)

    def shape(self, a: torch.Tensor) -> tuple[int, ...]:
        return tuple(a.shape)

    def confusion(self, reference: torch.Tensor, prediction: torch.Tensor) -> Confusion:
        ref = reference.reshape(-1)
        pred = prediction.reshape(-1)
        if ref.numel() == 0:
            empty = np.zeros(0, dtype=np.int64)
            return Confusion(empty, empty, empty)
        n = int(max(ref.max().item(), pred.max().item())) + 1
        if n * n > DENSE_BINS:
            return _sparse_confusion(ref.cpu().numpy(), pred.cpu().numpy())
        index_dtype = self._index_dtype(n * n)
        bins = torch.zeros(n * n, dtype=torch.int64, device=self.device)
        for start in range(0, ref.numel(), GPU_CHUNK):
            index = ref[start:start + GPU_CHUNK].to(index_dtype) * n  # stays index_dtype
            index += pred[start:start + GPU_CHUNK].to(index_dtype)
            bins += torch.bincount(index, minlength=n * n)
        counts = bins.cpu().numpy()
        (nonzero,) = np.nonzero(counts)
        return Confusion(nonzero // n, nonzero % n, counts[nonzero])

    def _index_dtype(self, bins: int) -> torch.dtype:
        """The smallest integer type holding every pair index: the bincount's input is read
        and written once more per voxel, so uint8 instead of int64 moves 8× fewer bytes
        through GPU memory (the counting is memory-bound).  MPS keeps the int64 index it
        always had: no MPS machine was at hand to check its bincount on smaller types."""
        if str(self.device).startswith("mps"):
            return torch.int64
        if bins <= 1 << 8:
            return torch.uint8
        if bins <= 1 << 15:
            return torch.int16
        return torch.int32 if bins <= 1 << 31 else torch.int64

    def channel_counts(self, reference: torch.Tensor, prediction: torch.Tensor,
                       valid: torch.Tensor | None) -> ChannelCounts:
        n_channels = reference.shape[0]
        ref = reference.reshape(n_channels, -1).to(torch.bool)
        pred = prediction.reshape(n_channels, -1).to(torch.bool)
        if valid is not None:
            mask = valid.reshape(1, -1)
            ref, pred = ref & mask, pred & mask
            n_valid = int(torch.count_nonzero(valid).item())
        else:
            n_valid = ref.shape[1]
        tp = torch.count_nonzero(ref & pred, dim=1).cpu().numpy().astype(np.int64)
        n_ref = torch.count_nonzero(ref, dim=1).cpu().numpy().astype(np.int64)
        n_pred = torch.count_nonzero(pred, dim=1).cpu().numpy().astype(np.int64)
        fp, fn = n_pred - tp, n_ref - tp
        return ChannelCounts(tp, fp, fn, n_valid - tp - fp - fn)

    def soft_counts(self, reference: torch.Tensor, probability: torch.Tensor,
                    valid: torch.Tensor | None) -> ChannelCounts:
        n_channels = reference.shape[0]
        g = reference.reshape(n_channels, -1).to(torch.float64)
        p = probability.reshape(n_channels, -1).to(torch.float64)
        if valid is not None:
            mask = valid.reshape(1, -1).to(torch.float64)
            g, p = g * mask, p * mask
            n_valid = float(torch.count_nonzero(valid).item())
        else:
            n_valid = float(g.shape[1])
        sums = torch.stack([(p * g).sum(dim=1), p.sum(dim=1), g.sum(dim=1)]).cpu().numpy()
        tp, fp, fn = sums[0], sums[1] - sums[0], sums[2] - sums[0]
        return ChannelCounts(tp, fp, fn, n_valid - tp - fp - fn, soft=True)
