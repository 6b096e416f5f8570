"""medm3: VILA-M3 as software.

A medical vision-language model that knows when to call an expert model
(VISTA3D CT segmentation, BraTS MRI tumour segmentation, TorchXRayVision chest
X-ray classifiers) and answers from the expert's full-resolution result.

The top-level package stays light: heavy libraries (torch, MONAI, transformers)
are imported only inside the code that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

__all__ = ["InputError", "MedM3Error", "MedicalImage", "__version__", "load_image"]

if TYPE_CHECKING:  # pragma: no cover
    from medm3.errors import InputError, MedM3Error
    from medm3.imaging import MedicalImage, load_image


def __getattr__(name: str) -> Any:
    """Resolve the public API lazily so `import medm3` stays fast."""
    if name in ("MedM3Error", "InputError"):
        from medm3 import errors

        return getattr(errors, name)
    if name in ("MedicalImage", "load_image"):
        from medm3 import imaging

        return getattr(imaging, name)
    raise AttributeError(f"module 'medm3' has no attribute {name!r}")
