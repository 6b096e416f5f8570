"""medm3: VILA-M3 as software.

A medical vision-language model that knows when to call an expert model
(VISTA3D CT segmentation, BraTS MRI tumour segmentation, TorchXRayVision chest
X-ray classifiers) and answers from the expert's full-resolution result.

The top-level package stays light: heavy libraries (torch, MONAI, transformers)
are imported only inside the code that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medm3.utils.lazy import lazy_getattr

__version__ = "0.1.0.dev0"

__all__ = ["InputError", "MedM3Error", "MedicalImage", "__version__", "load_image"]

if TYPE_CHECKING:  # pragma: no cover
    from medm3.errors import InputError, MedM3Error
    from medm3.imaging import MedicalImage, load_image

_HOMES = {
    "MedM3Error": "medm3.errors",
    "InputError": "medm3.errors",
    "MedicalImage": "medm3.imaging",
    "load_image": "medm3.imaging",
}

__getattr__ = lazy_getattr(__name__, _HOMES)
