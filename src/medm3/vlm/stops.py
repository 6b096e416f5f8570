"""Stop-string handling shared by every local backend (VILA-M3 and transformers models).

A generated answer ends at the first stop token (the tokenizer's EOS ids) and
is cut at the first stop string. :func:`cut_at_stop` is the one cutter;
:func:`safe_prefix` gives the part of a growing text that can already be
streamed without ever being taken back, so the concatenated stream equals the
final answer. ``strip=True`` is the VILA-M3 rule (the reference returns
``outputs.strip()``); the ``hf`` backend keeps the text as decoded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence


def cut_at_stop_ids(tokens: Sequence[int], stop_ids: Sequence[int]) -> tuple[list[int], bool]:
    """Tokens before the first stop id, and whether one was found."""
    stops = set(stop_ids)
    for index, token in enumerate(tokens):
        if token in stops:
            return list(tokens[:index]), True
    return list(tokens), False


def cut_at_stop(text: str, stops: Sequence[str], *, strip: bool = False) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string.

    Args:
        text: Decoded text.
        stops: Stop strings (empty ones are ignored).
        strip: Also strip surrounding whitespace from the result.

    Returns:
        The answer and whether a stop string was found.
    """
    cut = min((i for s in stops if s and (i := text.find(s)) >= 0), default=-1)
    answer = text[:cut] if cut >= 0 else text
    return (answer.strip() if strip else answer), cut >= 0


def safe_prefix(text: str, stops: Sequence[str], *, strip: bool = False) -> str:
    """The prefix of the final answer that ``text`` (still growing) already fixes.

    Holds back any suffix that could be the start of a stop string and, with
    ``strip``, leading and trailing whitespace (the final strip may remove it).

    Args:
        text: The text decoded so far.
        stops: Stop strings.
        strip: The final answer will be stripped.

    Returns:
        A prefix of the final answer.
    """
    final, hit = cut_at_stop(text, stops, strip=strip)
    if hit:
        return final
    body = text.lstrip() if strip else text
    hold = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(body)), hold, -1):
            if body.endswith(stop[:size]):
                hold = size
                break
    shown = body[: len(body) - hold]
    return shown.rstrip() if strip else shown


def text_deltas(
    texts: Iterable[str], stops: Sequence[str], *, strip: bool = False
) -> Iterator[str]:
    """Turn a growing text (each item the full text so far) into stream deltas.

    The deltas concatenate to the last text cut at the first stop string
    (stripped with ``strip``); nothing shown is ever taken back. Iteration of
    ``texts`` ends at the first stop string.

    Args:
        texts: The full decoded text after each step.
        stops: Stop strings.
        strip: The final answer is stripped.

    Yields:
        Text deltas.
    """
    emitted = ""
    last = ""
    for text in texts:
        last = text
        final, hit = cut_at_stop(text, stops, strip=strip)
        shown = final if hit else safe_prefix(text, stops, strip=strip)
        if len(shown) > len(emitted):
            yield shown[len(emitted) :]
            emitted = shown
        if hit:
            return
    final, _ = cut_at_stop(last, stops, strip=strip)
    if len(final) > len(emitted):
        yield final[len(emitted) :]
