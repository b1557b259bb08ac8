"""On a CUDA device: the same steps as on the CPU (skipped where there is none; benchmarks/checks/gpu.sh runs
them on a GPU machine)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from beyondbp import make_method, make_objective
from beyondbp.models.registry import build_model

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CE = make_objective("ce", "classification")


@pytest.mark.parametrize("method", ["bp", "usf", "dfa", "f3", "fg:k4"])
def test_a_step_on_cuda_gives_the_cpu_step_gradients(method):
    """ResNet-20 with batch norm, one step from the same state and batch (fg: the same tangents, drawn on the
    CPU generator), in float32 with TF32 off: gradients agree to float32 rounding over the layers."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    x, t = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    grads = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = build_model("resnet20", (3, 16, 16), 10, nn.Identity()).to(device)
        m = make_method(method)
        m.attach(model, num_outputs=10, num_samples=16)
        m.step(model, x.to(device), t.to(device), torch.arange(16, device=device), CE)
        grads.append(torch.cat([p.grad.flatten().cpu() for p in model.parameters() if p.grad is not None]))
    cpu, cuda = grads
    assert cpu.shape == cuda.shape
    assert torch.nn.functional.cosine_similarity(cpu, cuda, dim=0) > 0.999
    assert torch.allclose(cpu, cuda, rtol=1e-3, atol=1e-4 * float(cpu.abs().max()))


@pytest.mark.parametrize("method", ["bp", "f3"])
def test_data_moved_onto_the_device_give_the_run_of_data_copied_per_batch(tmp_path, method):
    """The same batches either way: a run whose data live on the device ends where one copying each batch does
    (F3 reads its buffer by the batch's sample indices, on the device too)."""
    from beyondbp import RunConfig, run
    from beyondbp.data import load_dataset
    from beyondbp.execution import ExecutionOptions

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    data = load_dataset("digits")
    placed = ExecutionOptions(data_placement="device").place(data, torch.device("cuda"))
    assert placed.train.x.is_cuda and placed.test.t.is_cuda
    common = dict(method=method, dataset="digits", hidden=(64,), epochs=2, seed=3, device="cuda")
    runs = [run(RunConfig(**common, data_placement=where), tmp_path / where, progress=False)
            for where in ("device", "host")]
    assert runs[0]["test_accuracy"] == pytest.approx(runs[1]["test_accuracy"], abs=0.01)
