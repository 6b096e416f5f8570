"""The one device/dtype selection (experts, ``vila`` and ``hf`` backends)."""

from __future__ import annotations

import pytest

from medm3.errors import InputError
from medm3.utils.device import autocast_dtype, parse_dtype, select_device, select_dtype

torch = pytest.importorskip("torch")


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """Pretend which accelerators exist."""

    def set_(cuda: bool, mps: bool, bf16: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    monkeypatch.delenv("MEDM3_DEVICE", raising=False)
    return set_


def test_auto_prefers_cuda_then_mps_then_cpu(machine, monkeypatch) -> None:
    machine(cuda=True, mps=True)
    assert select_device().type == "cuda" and select_device("auto").type == "cuda"
    machine(cuda=False, mps=True)
    assert select_device(None).type == "mps"
    machine(cuda=False, mps=False)
    assert select_device().type == "cpu"
    monkeypatch.setenv("MEDM3_DEVICE", "cpu")
    machine(cuda=True, mps=False)
    assert select_device().type == "cpu" and select_device("cuda:1") == torch.device("cuda:1")


def test_unavailable_or_invalid_devices_are_input_errors(machine) -> None:
    machine(cuda=False, mps=False)
    with pytest.raises(InputError, match="CUDA is not available"):
        select_device("cuda")
    with pytest.raises(InputError, match="MPS is not available"):
        select_device("mps")
    with pytest.raises(InputError, match="invalid device 'gpu0'"):
        select_device("gpu0")


def test_dtypes(machine) -> None:
    machine(cuda=True, mps=False, bf16=True)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert select_dtype(None, cuda) == torch.float16  # the VILA-M3 reference
    assert select_dtype("auto", cuda, prefer_bf16=True) == torch.bfloat16
    assert select_dtype(None, "auto", prefer_bf16=True) == torch.bfloat16
    assert select_dtype(None, cpu, prefer_bf16=True) == torch.float32
    assert select_dtype(None, torch.device("mps")) == torch.float32
    assert autocast_dtype(cuda) == torch.bfloat16 and autocast_dtype(cpu) is None
    machine(cuda=True, mps=False, bf16=False)
    assert select_dtype(None, cuda, prefer_bf16=True) == torch.float16
    assert autocast_dtype(cuda) == torch.float16
    machine(cuda=False, mps=False)
    assert select_dtype(None, "auto", prefer_bf16=True) == torch.float32
    assert [parse_dtype(n) for n in ("bf16", "torch.float16", "half", torch.float32)] == [
        torch.bfloat16,
        torch.float16,
        torch.float16,
        torch.float32,
    ]
    with pytest.raises(InputError, match="unknown dtype 'int3'"):
        select_dtype("int3", cpu)
