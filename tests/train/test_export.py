"""Export helpers: LoRA folding equals PEFT's merge, atomic folders, checkpoint bookkeeping."""

from __future__ import annotations

import pytest

from medm3.train import checkpoints
from medm3.train.export import atomic_folder, merge_lora, sub_state
from medm3.train.trainer import epoch_batches, lr_lambda

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")


def test_merge_lora_matches_peft_merge_and_unload():
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    config = peft.LoraConfig(r=2, lora_alpha=6, target_modules=["0", "2"])
    wrapped = peft.get_peft_model(model, config)
    for name, param in wrapped.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapters do something
            param.data.normal_()
    state = {k: v.clone() for k, v in wrapped.state_dict().items()}
    merged = merge_lora(state, scaling=6 / 2)
    reference = wrapped.merge_and_unload().state_dict()
    assert merged.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(merged[key], value)
    assert merge_lora({"a.weight": torch.ones(1)}, None).keys() == {"a.weight"}
    assert sub_state({"x.a": 1, "y.b": 2}, "x.") == {"a": 1}


def test_atomic_folder_replaces_only_on_success(tmp_path):
    final = tmp_path / "final"
    with atomic_folder(final) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError), atomic_folder(final) as tmp:
        (tmp / "a.txt").write_text("2")
        raise RuntimeError("boom")
    assert (final / "a.txt").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["final"]


def test_checkpoint_listing_ignores_incomplete_and_prunes(tmp_path):
    for step in (2, 4, 10):
        tmp = checkpoints.temp_dir(tmp_path, step)
        tmp.mkdir()
        checkpoints.finalize(tmp, checkpoints.checkpoint_dir(tmp_path, step), {"step": step})
    (tmp_path / "checkpoint-12").mkdir()  # no trainer_state.json: incomplete
    checkpoints.temp_dir(tmp_path, 14).mkdir()
    assert [s for s, _ in checkpoints.list_checkpoints(tmp_path)] == [2, 4, 10]
    assert checkpoints.resume_from(tmp_path, "auto").name == "checkpoint-10"
    checkpoints.prune(tmp_path, 2)
    checkpoints.clear_temp(tmp_path)
    assert [s for s, _ in checkpoints.list_checkpoints(tmp_path)] == [4, 10]
    assert not list(tmp_path.glob(".checkpoint-*"))


def test_data_order_is_seeded_and_sharded():
    one = epoch_batches(7, 2, world=1, rank=0, seed=3, epoch=0)
    assert one == epoch_batches(7, 2, world=1, rank=0, seed=3, epoch=0)
    assert one != epoch_batches(7, 2, world=1, rank=0, seed=3, epoch=1)
    assert {i for b in one for i in b} == set(range(7)) and sum(map(len, one)) == 8
    ranks = [epoch_batches(7, 2, world=2, rank=r, seed=3, epoch=0) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    assert sorted({i for r in ranks for b in r for i in b}) == list(range(7))


def test_cosine_schedule_with_warmup():
    factor = lr_lambda("cosine", warmup=2, total=10)
    assert [factor(0), factor(1), factor(2)] == [0.5, 1.0, 1.0]
    assert factor(6) == pytest.approx(0.5) and factor(10) == pytest.approx(0.0)
    assert lr_lambda("linear", 0, 4)(2) == pytest.approx(0.5)
    assert lr_lambda("constant", 0, 4)(3) == 1.0
