"""Device and precision selection for expert networks (moved to :mod:`medm3.utils.device`)."""

from __future__ import annotations

from medm3.utils.device import autocast_dtype, select_device

__all__ = ["autocast_dtype", "select_device"]
