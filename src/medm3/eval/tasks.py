"""Evaluation tasks: dataset loader + prompt + generation settings + scorer, per protocol.

* ``vqa-rad``, ``slake``, ``pathvqa`` -- protocols ``vila-m3`` (headline
  ``accuracy``) and ``llava-med`` (headline ``closed``, plus ``open_recall``);
* ``mimic-cxr-report`` -- ``vila-m3``: ``bleu_4`` headline, BLEU-1..3, METEOR,
  ROUGE-L, CIDEr (GREEN / RadGraph-F1 where available);
* ``chexpert-cls`` (5 findings), ``cxr14-cls`` (3 findings) -- ``vila-m3``,
  experts on or off: ``f1_macro`` headline, per-class F1.

Prompts (text from :mod:`medm3.prompts`; the image always comes first):

* VQA ``vila-m3``: the question without ``<image>``, then a newline and
  "Answer with the option's letter from the given choices directly." (the
  reference ran VILA's ``model_vqa_science --single-pred-prompt``); greedy,
  1024 new tokens.
* VQA ``llava-med``: the question alone; sampling at temperature 0.7, 1024 tokens.
* Report: "Describe the image in detail."; sampling at temperature 0.2, 512 tokens.
* Classification: the reference yes/no question; with experts, the CXR expert's
  ``label: yes/no`` lines (probability > 0.5) come before the question; greedy.

No task sets a minimum answer length: the reference generated with the
transformers defaults, and a forced second token would turn "Yes" into "Yes."
and fail the exact match.

Tasks are looked up in :data:`TASKS` (plugins: entry-point group ``medm3.eval_tasks``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medm3 import prompts
from medm3.errors import InputError
from medm3.eval.datasets import LoadedData, load_classification, load_report, load_vqa
from medm3.eval.samples import Sample
from medm3.eval.scorers.common import Reference, ScoreResult
from medm3.registry import Registry
from medm3.vlm.base import GenerationConfig, ImagePart, Message, TextPart

__all__ = ["PROTOCOLS", "TASKS", "Task", "get_task"]

#: Protocol name -> one-line description (printed with every number).
PROTOCOLS: dict[str, str] = {
    "vila-m3": "VILA-M3 reference scripts: exact match after strip/lower; F1; pycocoevalcap",
    "llava-med": "LLaVA-Med v1.0 run_eval: closed substring rule, open unigram recall",
}


@dataclass(frozen=True)
class Task:
    """One evaluation task.

    Attributes:
        name: Registry name (``vqa-rad``).
        kind: ``vqa``, ``report`` or ``classification``.
        dataset: Dataset key for the loader (``vqa-rad``, ``chexpert`` ...).
        title: Human-readable name.
        protocols: Supported protocols; the first is the default.
        classes: Classification classes, in question order.
    """

    name: str
    kind: str
    dataset: str
    title: str
    protocols: tuple[str, ...] = ("vila-m3",)
    classes: tuple[str, ...] = ()

    @property
    def supports_experts(self) -> bool:
        """Whether ``experts=True`` is meaningful (CXR classification)."""
        return self.kind == "classification"

    def check(self, protocol: str | None, experts: bool = False) -> str:
        """Validate the options and return the protocol in use.

        Raises:
            InputError: Unknown/unsupported protocol, or experts where not supported.
        """
        chosen = (protocol or self.protocols[0]).lower()
        if chosen not in PROTOCOLS:
            raise InputError(f"unknown protocol '{protocol}' (choose: {', '.join(PROTOCOLS)})")
        if chosen not in self.protocols:
            choices = ", ".join(self.protocols)
            raise InputError(f"task '{self.name}' has no '{chosen}' protocol (choose: {choices})")
        if experts and not self.supports_experts:
            raise InputError(f"task '{self.name}' has no expert variant (use --experts off)")
        return chosen

    def load(self, data: Path, protocol: str, image_root: Path | None = None) -> LoadedData:
        """Load the test samples under the protocol's split rules (see :mod:`.datasets`)."""
        if self.kind == "vqa":
            return load_vqa(data, self.dataset, protocol, image_root)
        if self.kind == "report":
            return load_report(data, image_root)
        return load_classification(data, self.dataset, self.classes, image_root)

    def generation(self, protocol: str) -> GenerationConfig:
        """The protocol's decoding settings (the runner adds the seed)."""
        if self.kind == "report":
            return GenerationConfig(max_new_tokens=512, min_new_tokens=0, temperature=0.2)
        if protocol == "llava-med":
            return GenerationConfig(max_new_tokens=1024, min_new_tokens=0, temperature=0.7)
        return GenerationConfig(max_new_tokens=1024, min_new_tokens=0, temperature=0.0)

    def prompt_text(self, sample: Sample, protocol: str, expert_lines: str | None = None) -> str:
        """The text that follows the image for one sample."""
        if self.kind == "report":
            return prompts.REPORT_PROMPT
        if self.kind == "classification":
            return prompts.cxr_class_question(sample.label, expert_lines)
        return prompts.vqa_eval_question(sample.question, single_letter=protocol == "vila-m3")

    def messages(
        self, sample: Sample, image: Any, protocol: str, expert_lines: str | None = None
    ) -> list[Message]:
        """The conversation sent to the model: one user turn, image then text.

        Args:
            sample: The sample.
            image: Its RGB PIL image.
            protocol: Protocol in use.
            expert_lines: Expert block (classification with experts), else ``None``.
        """
        text = self.prompt_text(sample, protocol, expert_lines)
        return [Message("user", [ImagePart(image), TextPart(text)])]

    def reference(self, sample: Sample, protocol: str) -> Reference:
        """The scorer's view of a sample's ground truth.

        ``vila-m3`` takes a conversation's last ``gpt`` turn, ``llava-med`` its
        second turn (``conversations[1]``); they differ only for multi-turn rows.
        """
        answer = sample.answer
        if protocol == "vila-m3":
            answer = str(sample.meta.get("answer_last", answer))
        return Reference(sample.id, answer, sample.answer_type, sample.label)

    def score(
        self,
        samples: Sequence[Sample],
        predictions: Mapping[str, str],
        protocol: str,
        *,
        judges: bool = True,
    ) -> ScoreResult:
        """Score predictions (question id -> text) of these samples.

        Args:
            samples: The evaluated samples.
            predictions: Generated texts by sample id.
            protocol: Protocol in use.
            judges: Report task: try GREEN / RadGraph-F1.
        """
        refs = [self.reference(s, protocol) for s in samples]
        if self.kind == "report":
            from medm3.eval.scorers import report

            return report.score(refs, predictions, judges=judges)
        if self.kind == "classification":
            from medm3.eval.scorers import classification

            return classification.score(refs, predictions)
        if protocol == "llava-med":
            from medm3.eval.scorers import llava_med

            return llava_med.score(refs, predictions)
        from medm3.eval.scorers import vila_m3

        return vila_m3.score(refs, predictions)

    def primary_metric(self, protocol: str) -> str:
        """The metric compared with the published headline number."""
        if self.kind == "report":
            return "bleu_4"
        if self.kind == "classification":
            return "f1_macro"
        return "closed" if protocol == "llava-med" else "accuracy"


VQA_RAD = Task("vqa-rad", "vqa", "vqa-rad", "VQA-RAD", ("vila-m3", "llava-med"))
SLAKE = Task("slake", "vqa", "slake", "SLAKE (English)", ("vila-m3", "llava-med"))
PATHVQA = Task("pathvqa", "vqa", "pathvqa", "PathVQA", ("vila-m3", "llava-med"))
MIMIC_CXR_REPORT = Task("mimic-cxr-report", "report", "mimic-cxr", "MIMIC-CXR report")
CHEXPERT_CLS = Task(
    "chexpert-cls",
    "classification",
    "chexpert",
    "CheXpert (CheXlocalize)",
    classes=("atelectasis", "cardiomegaly", "consolidation", "edema", "pleural effusion"),
)
CXR14_CLS = Task(
    "cxr14-cls",
    "classification",
    "cxr14",
    "ChestX-ray14 (Google labels)",
    classes=("fracture", "pneumothorax", "lung opacity"),
)

#: The task registry (name -> :class:`Task`), with the ``medm3.eval_tasks`` plugin group.
TASKS: Registry[Task] = Registry(
    "eval task",
    "medm3.eval_tasks",
    {
        "vqa-rad": "medm3.eval.tasks:VQA_RAD",
        "slake": "medm3.eval.tasks:SLAKE",
        "pathvqa": "medm3.eval.tasks:PATHVQA",
        "mimic-cxr-report": "medm3.eval.tasks:MIMIC_CXR_REPORT",
        "chexpert-cls": "medm3.eval.tasks:CHEXPERT_CLS",
        "cxr14-cls": "medm3.eval.tasks:CXR14_CLS",
    },
)


def get_task(name: str | Task) -> Task:
    """The task called ``name`` (a :class:`Task` is returned as is).

    Raises:
        InputError: Unknown task (with "did you mean").
    """
    return name if isinstance(name, Task) else TASKS.get(name)
