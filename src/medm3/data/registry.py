"""The data-builder registry: built-in builders plus the ``medm3.data_builders`` entry points.

Third-party packages register a :class:`~medm3.data.base.Builder` subclass with::

    [project.entry-points."medm3.data_builders"]
    my-dataset = "mypackage.data:MyBuilder"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medm3.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from medm3.data.base import Builder

#: Built-in builders (the modules import nothing heavy at module level).
BUILTIN_BUILDERS: dict[str, str] = {
    "vqa-rad": "medm3.data.vqa_rad:VqaRadBuilder",
    "slake": "medm3.data.slake:SlakeBuilder",
    "pathvqa": "medm3.data.pathvqa:PathVqaBuilder",
    "mimic-cxr": "medm3.data.mimic_cxr:MimicCxrBuilder",
    "iu-xray": "medm3.data.iu_xray:IuXrayBuilder",
    "expert-cxr": "medm3.data.expert_cxr:ExpertCxrBuilder",
    "expert-vista3d": "medm3.data.expert_vista3d:ExpertVista3DBuilder",
    "expert-brats": "medm3.data.expert_brats:ExpertBratsBuilder",
}

BUILDERS: Registry[type[Builder]] = Registry(
    "data builder", "medm3.data_builders", BUILTIN_BUILDERS
)


def builder_names() -> list[str]:
    """Registered builder names: built-ins in listing order, then plugins sorted."""
    return BUILDERS.listed_names()


def get_builder(name: str) -> type[Builder]:
    """The builder class registered as ``name``.

    Raises:
        InputError: Unknown builder (with "did you mean").
    """
    return BUILDERS.get(name)
