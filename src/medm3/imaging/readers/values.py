"""Intensity scaling shared by the DICOM and NIfTI readers.

dtype rule: stored values without scaling keep their stored dtype (native
byte order); scaled values stay integer (``int16``) when the result is exact
and fits, e.g. CT stored as uint16 with intercept -1024; anything else becomes
``float32``.
"""

from __future__ import annotations

import numpy as np

_I16 = np.iinfo(np.int16)


def native(array: np.ndarray) -> np.ndarray:
    """Return ``array`` in native byte order (big-endian NIfTI/DICOM data exist).

    Args:
        array: Any array.

    Returns:
        The same data with a native-endian dtype.
    """
    if not array.dtype.isnative:
        return array.astype(array.dtype.newbyteorder("="))
    return array


def apply_rescale(
    stack: np.ndarray, slopes: np.ndarray | float, intercepts: np.ndarray | float
) -> np.ndarray:
    """Compute ``stored * slope + intercept`` with the dtype rule of this module.

    Args:
        stack: Stored values; when ``slopes``/``intercepts`` are arrays their
            length is ``stack.shape[0]`` (one value per slice/frame).
        slopes: Rescale slope(s).
        intercepts: Rescale intercept(s).

    Returns:
        The scaled values (``stack`` itself when the scaling is the identity).
    """
    stack = native(stack)
    slopes = np.atleast_1d(np.asarray(slopes, dtype=np.float64))
    intercepts = np.atleast_1d(np.asarray(intercepts, dtype=np.float64))
    if np.all(slopes == 1.0) and np.all(intercepts == 0.0):
        return stack
    integral = (
        stack.dtype.kind in "iub"
        and np.all(slopes == np.round(slopes))
        and np.all(intercepts == np.round(intercepts))
    )
    out_dtype = np.float32
    if integral and stack.size:
        lo, hi = int(stack.min()), int(stack.max())
        ends = [lo * slopes.min(), lo * slopes.max(), hi * slopes.min(), hi * slopes.max()]
        out_lo, out_hi = min(ends) + intercepts.min(), max(ends) + intercepts.max()
        if _I16.min <= out_lo and out_hi <= _I16.max:
            out_dtype = np.int16
    return _scale_in_chunks(stack, slopes, intercepts, out_dtype)


def _scale_in_chunks(
    stack: np.ndarray, slopes: np.ndarray, intercepts: np.ndarray, out_dtype: type
) -> np.ndarray:
    """``stack * slope + intercept`` into a new ``out_dtype`` array, a few slices at a time.

    Working slice by slice keeps the peak memory at the input plus the output
    (a whole-volume int32/float64 temporary would cost 2-4x the volume again).
    """
    out = np.empty(stack.shape, dtype=out_dtype)
    per_slice = slopes.size > 1 or intercepts.size > 1
    work = np.int64 if out_dtype == np.int16 else np.float64
    n = stack.shape[0] if stack.ndim else 1
    chunk = max(1, (1 << 22) // max(1, stack[0].size if stack.ndim > 1 else 1))
    for k0 in range(0, n, chunk):
        k1 = min(n, k0 + chunk)
        part = stack[k0:k1].astype(work)
        if per_slice:
            shape = (-1,) + (1,) * (stack.ndim - 1)
            s = np.broadcast_to(slopes, (n,))[k0:k1].reshape(shape)
            b = np.broadcast_to(intercepts, (n,))[k0:k1].reshape(shape)
        else:
            s, b = slopes[0], intercepts[0]
        if work is np.int64:
            s, b = np.asarray(s).astype(np.int64), np.asarray(b).astype(np.int64)
        out[k0:k1] = part * s + b
    return out


def invert(array: np.ndarray) -> tuple[np.ndarray, float]:
    """Invert intensities about the image's own range: ``min + max - value``.

    Used for MONOCHROME1 so that higher means brighter; the range (and the
    dtype) is preserved.

    Args:
        array: Grayscale data.

    Returns:
        ``(inverted, pivot)`` where ``pivot = min + max``; apply the same to
        a window level: ``level' = pivot - level``.
    """
    if array.size == 0:
        return array, 0.0
    lo, hi = array.min(), array.max()
    if array.dtype.kind in "iu":
        pivot = int(lo) + int(hi)
        return (pivot - array.astype(np.int64)).astype(array.dtype), float(pivot)
    pivot_f = float(lo) + float(hi)
    return (pivot_f - array).astype(array.dtype), pivot_f
