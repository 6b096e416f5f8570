"""Training examples: labels on the answers only, token by token; training text = inference text."""

from __future__ import annotations

import pytest

from medm3.train.dataset import IGNORE_INDEX, read_samples, to_messages
from medm3.vlm.vila.tokenize import IMAGE_TOKEN_INDEX
from tests.train.conftest import EXPERT_ROW_ID, write_png

torch = pytest.importorskip("torch")

ANSWERS = ["<VISTA3D(hepatic tumor)>", "Yes, a hepatic tumor is seen."]


def labelled_runs(ids: list[int], labels: list[int]) -> list[tuple[int, list[int]]]:
    """``(start, ids)`` of each maximal run of labelled positions."""
    runs: list[tuple[int, list[int]]] = []
    for i, (token, label) in enumerate(zip(ids, labels, strict=True)):
        if label == IGNORE_INDEX:
            continue
        assert label == token, f"label {label} differs from the input id {token} at {i}"
        if runs and runs[-1][0] + len(runs[-1][1]) == i:
            runs[-1][1].append(token)
        else:
            runs.append((i, [token]))
    return runs


@pytest.fixture(scope="module")
def expert_messages(dataset_json):
    samples = {s.id: s for s in read_samples([dataset_json])}
    sample = samples[EXPERT_ROW_ID]
    from medm3.train.dataset import load_image

    return to_messages(sample, [load_image(p) for p in sample.images])


def vila_parts(checkpoint):
    from medm3.vlm.vila import VilaBackend

    backend = VilaBackend(str(checkpoint), device="cpu")
    from medm3.train.vila_sft import VilaEncoder, _ImagePrep

    return backend, VilaEncoder(
        backend.tokenizer, backend.template, 4096, _ImagePrep(backend.model)
    )


def test_llama3_labels_token_by_token(tiny_vila, expert_messages):
    backend, encoder = vila_parts(tiny_vila["llama_3"])
    tok = backend.tokenizer
    ids, labels, images = encoder.ids_and_labels(expert_messages)
    assert len(images) == 2 and ids.count(IMAGE_TOKEN_INDEX) == 2
    runs = labelled_runs(ids, labels)
    header = tok("<|start_header_id|>assistant<|end_header_id|>\n\n", add_special_tokens=False)
    seps = [tok.convert_tokens_to_ids("<|eot_id|>"), tok.convert_tokens_to_ids("<|end_of_text|>")]
    assert len(runs) == 2
    for (start, run), answer, sep in zip(runs, ANSWERS, seps, strict=True):
        assert run == [*tok(answer, add_special_tokens=False).input_ids, sep]
        assert ids[start - len(header.input_ids) : start] == header.input_ids
    assert runs[-1][0] + len(runs[-1][1]) == len(ids)  # the last answer ends the sequence


def test_vicuna_labels_token_by_token(tiny_vila, expert_messages):
    backend, encoder = vila_parts(tiny_vila["vicuna_v1"])
    tok = backend.tokenizer
    ids, labels, _ = encoder.ids_and_labels(expert_messages)
    runs = labelled_runs(ids, labels)
    assert len(runs) == 2
    for start, _ in runs:
        assert tok.decode([i for i in ids[:start] if i >= 0]).endswith("ASSISTANT:")
    for (_, run), answer in zip(runs, ANSWERS, strict=True):
        # "▁"-prefixed answer pieces as SentencePiece writes them after "ASSISTANT: ", then </s>.
        assert run == [*tok(answer).input_ids[1:], tok.eos_token_id]
    second_user = runs[0][0] + len(runs[0][1])
    after = [i for i in ids[second_user:] if i >= 0]
    assert tok.decode(after).startswith("USER:") and labels[second_user] == IGNORE_INDEX


@pytest.mark.parametrize("template", ["llama_3", "vicuna_v1"])
def test_training_ids_extend_the_inference_prompt(tiny_vila, expert_messages, template):
    """Before each answer, the training ids are exactly what inference feeds the model."""
    backend, encoder = vila_parts(tiny_vila[template])
    ids, labels, _ = encoder.ids_and_labels(expert_messages)
    starts = [start for start, _ in labelled_runs(ids, labels)]
    turns = [i for i, m in enumerate(expert_messages) if m.role == "assistant"]
    for start, turn in zip(starts, turns, strict=True):
        (prompt,) = backend.render([expert_messages[:turn]])
        assert prompt.ids == ids[:start]


def test_vila_example_pixels_and_truncation(tiny_vila, expert_messages):
    _, encoder = vila_parts(tiny_vila["llama_3"])
    example = encoder(expert_messages)
    assert example["pixel_values"].shape == (2, 3, 42, 42)
    first_image = example["input_ids"].index(IMAGE_TOKEN_INDEX)
    encoder.max_length = first_image + 5  # keeps the first sentinel only
    short = encoder(expert_messages)
    assert len(short["input_ids"]) == first_image + 5
    assert short["pixel_values"].shape[0] == 1


def test_training_splice_equals_inference_splice(tiny_vila, expert_messages):
    from medm3.train.collate import collate_vila
    from medm3.train.vila_sft import VilaForTraining

    backend, encoder = vila_parts(tiny_vila["llama_3"])
    model = backend.model
    module = VilaForTraining(model, max_length=4096)
    example = encoder(expert_messages)
    text_only = {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "pixel_values": None}
    batch = collate_vila([example, text_only], pad_id=0)
    with torch.no_grad():
        train_features = module.encode_images(batch["pixel_values"])
        embeds, mask, labels = module.splice_batch(
            batch["input_ids"], batch["attention_mask"], batch["labels"], train_features
        )
    infer_features = model.encode_images(example["pixel_values"])
    torch.testing.assert_close(train_features, infer_features)
    spliced = model.splice(example["input_ids"], list(infer_features))
    length = spliced.embeds.shape[0]
    torch.testing.assert_close(embeds[0, :length], spliced.embeds)
    assert mask[0].sum() == length and mask[1].sum() == 3
    for start, end in spliced.image_spans:
        assert (labels[0, start:end] == IGNORE_INDEX).all()
    assert (embeds[1, 3:] == 0).all()


def test_hf_labels_token_by_token_and_inference_parity(tiny_llava, expert_messages):
    from medm3.train.hf_sft import HFEncoder, _image_ids, _stop_ids
    from medm3.vlm.hf import HFBackend

    backend = HFBackend(str(tiny_llava), device="cpu")
    processor, tok = backend.processor, backend.tokenizer
    encoder = HFEncoder(
        processor, 4096, _stop_ids(backend.model, tok), _image_ids(processor, backend.model)
    )
    example = encoder(expert_messages)
    ids, labels = example["input_ids"].tolist(), example["labels"].tolist()
    assert example["pixel_values"].shape[0] == 2
    runs = labelled_runs(ids, labels)
    # llava-1.5 renders "ASSISTANT: {text} " and no end-of-turn token: the answer with its
    # spaces is learned (the space before the next "USER" when it is a token of its own),
    # and EOS is appended to the last answer so that the model learns to stop.
    assert len(runs) == 2
    first, last = runs[0][1], runs[1][1]
    assert tok.decode(first) in (" " + ANSWERS[0], " " + ANSWERS[0] + " ")
    assert tok.decode(ids[runs[0][0] + len(first) :]).lstrip().startswith("USER:")
    assert last[-1] == tok.eos_token_id and tok.decode(last[:-1]) == " " + ANSWERS[1] + " "
    assert runs[1][0] + len(last) == len(ids)
    turns = [i for i, m in enumerate(expert_messages) if m.role == "assistant"]
    for (start, _), turn in zip(runs, turns, strict=True):
        prompt, images = backend.render(expert_messages[:turn])
        inference = backend._encode([prompt], [images])["input_ids"][0].tolist()
        assert inference == ids[:start]


def test_missing_image_is_one_input_error(tmp_path):
    import json

    from medm3.errors import InputError

    write_png(tmp_path / "ok.png", 0)
    rows = [
        {
            "id": "r0",
            "image": "gone.png",
            "conversations": [
                {"from": "human", "value": "<image>\nq"},
                {"from": "gpt", "value": "a"},
            ],
        }
    ]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(InputError, match="1 training image"):
        read_samples([path])
