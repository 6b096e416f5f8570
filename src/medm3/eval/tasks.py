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

A task is made of registered components, the way inspect_ai (dataset, solver,
scorer) and lm-evaluation-harness (task config) build theirs: its *kind*
(:class:`TaskKind`, in :data:`KINDS`) supplies the dataset loader, the prompt
builder, the decoding settings, the scorer and the headline metric. The
built-in kinds ``vqa``, ``report`` and ``classification`` are registrations
like any other; :func:`register_kind` adds one from outside the package, and
:func:`register_protocol` a scoring protocol. A task of an unknown kind is
rejected when it is created.

Tasks are looked up in :data:`TASKS` (plugins: entry-point group ``medm3.eval_tasks``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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

__all__ = [
    "KINDS",
    "PROTOCOLS",
    "TASKS",
    "Task",
    "TaskKind",
    "get_task",
    "register_kind",
    "register_protocol",
]

#: Protocol name -> one-line description (printed with every number).
PROTOCOLS: dict[str, str] = {
    "vila-m3": "VILA-M3 reference scripts: exact match after strip/lower; F1; pycocoevalcap",
    "llava-med": "LLaVA-Med v1.0 run_eval: closed substring rule, open unigram recall",
}

#: ``(task, data, protocol, image_root) -> LoadedData``
Loader = Callable[["Task", Path, str, "Path | None"], LoadedData]
#: ``(task, sample, protocol, expert_lines) -> text after the image``
PromptBuilder = Callable[["Task", Sample, str, "str | None"], str]
#: ``(task, references, predictions, protocol, judges) -> ScoreResult``
Scorer = Callable[["Task", Sequence[Reference], Mapping[str, str], str, bool], ScoreResult]


@dataclass(frozen=True)
class TaskKind:
    """The components every task of one kind is made of.

    Attributes:
        name: Kind name (``vqa``, ``report``, ``classification`` or a plugin's).
        loader: Reads the test samples under a protocol's split rules.
        prompt: Builds the text that follows the image for one sample.
        scorer: Scores predictions (sample id -> text) against references.
        headline: Protocol -> the metric compared with the published number.
        generation: Protocol -> decoding settings (the runner adds the seed).
        supports_experts: Whether ``experts=True`` is meaningful (the prompt
            builder then receives the expert lines).
        requires: Checks optional dependencies before any generation (raises
            :class:`~medm3.errors.MedM3Error`), or ``None``.
    """

    name: str
    loader: Loader
    prompt: PromptBuilder
    scorer: Scorer
    headline: Callable[[str], str]
    generation: Callable[[str], GenerationConfig]
    supports_experts: bool = False
    requires: Callable[[], None] | None = None


#: Kind name -> components (:func:`register_kind` adds to it).
KINDS: dict[str, TaskKind] = {}


def register_kind(kind: TaskKind, *, replace: bool = False) -> TaskKind:
    """Register the components of a task kind.

    Raises:
        ValueError: The name is taken (unless ``replace``).
    """
    if kind.name in KINDS and not replace:
        raise ValueError(f"task kind {kind.name!r} is already registered")
    KINDS[kind.name] = kind
    return kind


def register_protocol(name: str, description: str) -> None:
    """Register a scoring protocol (its description is printed with every number)."""
    PROTOCOLS[name.lower()] = description


@dataclass(frozen=True)
class Task:
    """One evaluation task: a dataset under a kind's components.

    Attributes:
        name: Registry name (``vqa-rad``).
        kind: A registered :class:`TaskKind` name (``vqa``, ``report``,
            ``classification`` or a plugin's).
        dataset: Dataset key for the loader (``vqa-rad``, ``chexpert`` ...).
        title: Human-readable name.
        protocols: Supported protocols; the first is the default.
        classes: Classification classes, in question order.

    Raises:
        InputError: Unknown kind, or a protocol that is not registered.
    """

    name: str
    kind: str
    dataset: str
    title: str
    protocols: tuple[str, ...] = ("vila-m3",)
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(
                f"task '{self.name}' has unknown kind '{self.kind}' "
                f"(registered: {', '.join(sorted(KINDS))}; add one with register_kind)"
            )
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown or not self.protocols:
            raise InputError(
                f"task '{self.name}' names unknown protocol(s) {unknown or '(none)'} "
                f"(registered: {', '.join(PROTOCOLS)}; add one with register_protocol)"
            )

    @property
    def components(self) -> TaskKind:
        """The registered components of this task's kind."""
        return KINDS[self.kind]

    @property
    def supports_experts(self) -> bool:
        """Whether ``experts=True`` is meaningful (CXR classification)."""
        return self.components.supports_experts

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

    def require(self) -> None:
        """Check the kind's optional dependencies (before hours of generation)."""
        if self.components.requires is not None:
            self.components.requires()

    def load(self, data: Path, protocol: str, image_root: Path | None = None) -> LoadedData:
        """Load the test samples under the protocol's split rules (see :mod:`.datasets`)."""
        return self.components.loader(self, data, protocol, image_root)

    def generation(self, protocol: str) -> GenerationConfig:
        """The protocol's decoding settings (the runner adds the seed)."""
        return self.components.generation(protocol)

    def prompt_text(self, sample: Sample, protocol: str, expert_lines: str | None = None) -> str:
        """The text that follows the image for one sample."""
        return self.components.prompt(self, sample, protocol, expert_lines)

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
        return self.components.scorer(self, refs, predictions, protocol, judges)

    def primary_metric(self, protocol: str) -> str:
        """The metric compared with the published headline number."""
        return self.components.headline(protocol)


# ---------------------------------------------------------------- built-in kinds


def _vqa_score(
    task: Task, refs: Sequence[Reference], preds: Mapping[str, str], protocol: str, judges: bool
) -> ScoreResult:
    if protocol == "llava-med":
        from medm3.eval.scorers import llava_med

        return llava_med.score(refs, preds)
    from medm3.eval.scorers import vila_m3

    return vila_m3.score(refs, preds)


def _report_score(
    task: Task, refs: Sequence[Reference], preds: Mapping[str, str], protocol: str, judges: bool
) -> ScoreResult:
    from medm3.eval.scorers import report

    return report.score(refs, preds, judges=judges)


def _classification_score(
    task: Task, refs: Sequence[Reference], preds: Mapping[str, str], protocol: str, judges: bool
) -> ScoreResult:
    from medm3.eval.scorers import classification

    return classification.score(refs, preds)


def _require_coco() -> None:
    from medm3.eval.scorers.report import require_coco

    require_coco()


def _greedy(protocol: str) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=1024, min_new_tokens=0, temperature=0.0)


def _vqa_generation(protocol: str) -> GenerationConfig:
    if protocol == "llava-med":
        return GenerationConfig(max_new_tokens=1024, min_new_tokens=0, temperature=0.7)
    return _greedy(protocol)


register_kind(
    TaskKind(
        name="vqa",
        loader=lambda task, data, protocol, root: load_vqa(data, task.dataset, protocol, root),
        prompt=lambda task, sample, protocol, lines: prompts.vqa_eval_question(
            sample.question, single_letter=protocol == "vila-m3"
        ),
        scorer=_vqa_score,
        headline=lambda protocol: "closed" if protocol == "llava-med" else "accuracy",
        generation=_vqa_generation,
    )
)
register_kind(
    TaskKind(
        name="report",
        loader=lambda task, data, protocol, root: load_report(data, root),
        prompt=lambda task, sample, protocol, lines: prompts.REPORT_PROMPT,
        scorer=_report_score,
        headline=lambda protocol: "bleu_4",
        generation=lambda protocol: GenerationConfig(
            max_new_tokens=512, min_new_tokens=0, temperature=0.2
        ),
        requires=_require_coco,
    )
)
register_kind(
    TaskKind(
        name="classification",
        loader=lambda task, data, protocol, root: load_classification(
            data, task.dataset, task.classes, root
        ),
        prompt=lambda task, sample, protocol, lines: prompts.cxr_class_question(
            sample.label, lines
        ),
        scorer=_classification_score,
        headline=lambda protocol: "f1_macro",
        generation=_greedy,
        supports_experts=True,
    )
)

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
