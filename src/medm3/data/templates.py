"""Question templates of the expert-augmented builders (several phrasings per kind).

One phrasing is drawn per row with the item's seeded RNG
(:attr:`medm3.data.base.ItemContext.rng`), so a seed fixes every choice. The
templates are medm3's own; ``{name}`` is a structure or finding name,
``{plural}`` its plural.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

#: VISTA3D (CT) question templates by kind.
VISTA3D: dict[str, tuple[str, ...]] = {
    "what": (
        "What structures can you identify in this image?",
        "Which organs are visible in this CT image?",
        "What anatomical structures does this CT slice show?",
        "Can you name the structures you see here?",
        "What do you see in this CT scan?",
        "Identify the anatomy shown in this image.",
    ),
    "segment": (
        "Can you segment the {name}?",
        "Please segment the {name} in this image.",
        "Show me where the {name} is.",
        "Where is the {name} in this CT image?",
        "Highlight the {name}.",
        "Could you outline the {name} for me?",
    ),
    "is-there": (
        "Is there a {name} in this image?",
        "Can you identify any {name} in this CT image?",
        "Does this scan show a {name}?",
        "Do you see any {name} here?",
        "Is a {name} present?",
        "Are there signs of a {name} in this CT?",
    ),
    "how-many": (
        "How many {plural} are there?",
        "How many {plural} can you find in this scan?",
        "Count the {plural} in this CT image.",
        "What is the number of {plural} in this image?",
        "How many separate {plural} do you see?",
    ),
    "how-large": (
        "How large is the {name}?",
        "What is the volume of the {name}?",
        "How big is the {name} in this scan?",
        "Can you measure the {name}?",
        "What size is the {name}?",
    ),
}

#: BraTS (MRI) question templates by kind.
BRATS: dict[str, tuple[str, ...]] = {
    "segment": (
        "Can you segment the brain tumor?",
        "Please segment the tumor in these MRI images.",
        "Show me the tumor sub-regions.",
        "Where is the tumor in this brain MRI?",
        "Highlight the glioma in this scan.",
        "Could you outline the tumor for me?",
    ),
    "is-there": (
        "Is there {article} {name}?",
        "Does this tumor have {article} {name}?",
        "Can you see {article} {name} in these images?",
        "Is {article} {name} present?",
    ),
    "grade": (
        "Is this a high-grade or a low-grade glioma?",
        "What is the grade of this glioma?",
        "Would you classify this tumor as HGG or LGG?",
        "Is this glioma high grade or low grade?",
    ),
    "how-large": (
        "How large is the {name}?",
        "What is the volume of the {name}?",
        "How big is the {name}?",
        "Can you measure the {name}?",
    ),
}

#: Chest X-ray question templates by kind.
CXR: dict[str, tuple[str, ...]] = {
    "is-there": (
        "Is there {name} in this chest X-ray?",
        "Does this chest X-ray show {name}?",
        "Is {name} present?",
        "Can you see any signs of {name}?",
        "Is there {name} according to the provided X-ray image?",
        "Do you find evidence of {name} in this image?",
    ),
    "findings": (
        "What abnormalities are present in this chest X-ray?",
        "List the findings in this image.",
        "What are the findings of this chest X-ray?",
        "Which diseases can you see in this X-ray?",
        "What does this chest X-ray show?",
    ),
}


def plural(name: str) -> str:
    """``hepatic tumor`` -> ``hepatic tumors`` (names ending in ``s`` are kept)."""
    return name if name.endswith("s") else name + "s"


def article(name: str) -> str:
    """``a`` or ``an`` for a name."""
    return "an" if name[:1].lower() in "aeiou" else "a"


def pick(rng: random.Random, templates: Sequence[str], name: str = "") -> str:
    """Draw one template and fill it in.

    Args:
        rng: The item's RNG.
        templates: The phrasings of one kind.
        name: Value of ``{name}`` (``{plural}`` and ``{article}`` follow from it).
    """
    template = templates[rng.randrange(len(templates))]
    return template.format(name=name, plural=plural(name), article=article(name))


def join_names(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(names)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def format_ml(value: float) -> str:
    """A volume in mL the way :func:`medm3.prompts.measurement_text` writes it."""
    volume = float(value)
    return f"{volume:.1f}" if volume >= 1 else f"{volume:.3f}"
