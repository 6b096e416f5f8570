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
    if not stack.size:
        return _scale_in_chunks(stack, slopes, intercepts, np.float32)
    integer = stack.dtype.kind in "iub"
    lo, hi = (int(stack.min()), int(stack.max())) if integer else (0, 0)
    out_dtype = scaled_dtype(stack.dtype, lo, hi, slopes, intercepts)
    return _scale_in_chunks(stack, slopes, intercepts, out_dtype)


def scaled_dtype(
    dtype: np.dtype, lo: float, hi: float, slopes: np.ndarray, intercepts: np.ndarray
) -> type:
    """The dtype of ``stored * slope + intercept`` (the rule in the module docstring).

    Args:
        dtype: Stored dtype.
        lo: Smallest stored value.
        hi: Largest stored value.
        slopes: Rescale slope(s) (1-D).
        intercepts: Rescale intercept(s) (1-D).

    Returns:
        ``np.int16`` when the result is exact and fits, else ``np.float32``.
    """
    integral = (
        dtype.kind in "iub"
        and np.all(slopes == np.round(slopes))
        and np.all(intercepts == np.round(intercepts))
    )
    if integral:
        lo, hi = int(lo), int(hi)
        ends = [lo * slopes.min(), lo * slopes.max(), hi * slopes.min(), hi * slopes.max()]
        out_lo, out_hi = min(ends) + intercepts.min(), max(ends) + intercepts.max()
        if _I16.min <= out_lo and out_hi <= _I16.max:
            return np.int16
    return np.float32


def rescale_block(
    block: np.ndarray, slopes: np.ndarray, intercepts: np.ndarray, out_dtype: type
) -> np.ndarray:
    """``block * slope + intercept`` for a few slices, overwriting ``block`` when it can.

    The caller picks ``out_dtype`` with :func:`scaled_dtype` and makes sure
    the results fit it; 16-bit storage scaled to ``int16`` is then computed
    in place in 16-bit two's-complement arithmetic (exact: the wrap-around
    cancels out because the true result fits).

    Args:
        block: ``(k, rows, cols)`` stored values (the reader's scratch buffer).
        slopes: ``k`` slopes.
        intercepts: ``k`` intercepts.
        out_dtype: Result dtype.

    Returns:
        The scaled block (``block`` itself, or a view of it, when possible).
    """
    if np.all(slopes == 1.0) and np.all(intercepts == 0.0):
        return block if block.dtype == out_dtype else block.astype(out_dtype)
    if out_dtype == np.int16 and block.dtype.itemsize == 2 and block.dtype.kind in "iu":
        out = block.view(np.int16)
        for k in range(out.shape[0]):
            if slopes[k] != 1:
                np.multiply(out[k], _wrap16(slopes[k]), out=out[k])
            if intercepts[k] != 0:
                np.add(out[k], _wrap16(intercepts[k]), out=out[k])
        return out
    shape = (-1,) + (1,) * (block.ndim - 1)
    s, b = slopes.reshape(shape), intercepts.reshape(shape)
    if out_dtype == np.int16:
        return (block.astype(np.int64) * s.astype(np.int64) + b.astype(np.int64)).astype(np.int16)
    return (block.astype(np.float64) * s + b).astype(np.float32)


def _wrap16(value: float) -> np.int16:
    return np.int16(((int(value) + 32768) % 65536) - 32768)


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


def invert_in_place(array: np.ndarray) -> float:
    """:func:`invert` overwriting ``array`` (one slice at a time, no volume-sized temporary).

    Args:
        array: Grayscale data, slices along the first axis.

    Returns:
        The pivot ``min + max``.
    """
    if array.size == 0:
        return 0.0
    lo, hi = array.min(), array.max()
    integer = array.dtype.kind in "iu"
    pivot = int(lo) + int(hi) if integer else float(lo) + float(hi)
    for k in range(array.shape[0]):
        part = array[k].astype(np.int64) if integer else array[k]
        array[k] = pivot - part
    return float(pivot)


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
