"""Models as other libraries write them: outputs that are objects, points that return tuples, stacks of blocks,
shared (tied) parameters, and Hugging Face models built from a configuration."""

from __future__ import annotations

import collections
import json

import pytest
import torch
from torch import nn

from beyondbp import Trainer
from beyondbp.cli import main
from beyondbp.data import Dataset
from beyondbp.errors import BeyondBPError, UnsupportedModelError
from beyondbp.methods import make_method
from beyondbp.methods.points import FeedbackPoints
from beyondbp.models.hf import build_hf_model, parse_settings
from beyondbp.models.outputs import select_output
from beyondbp.objectives import make_objective

CE = make_objective("ce", "classification")
Pair = collections.namedtuple("Pair", "hidden logits")


class Returns(nn.Module):
    """A small classifier whose forward returns its logits wrapped as ``kind`` says."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.body = nn.Sequential(nn.Linear(4, 16), nn.Tanh())
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.body(x)
        y = self.head(h)
        return {"dict": {"hidden": h, "logits": y}, "tuple": (y, h), "named": Pair(h, y),
                "scores": {"scores": y, "hidden": h}}[self.kind]


def blobs(n: int = 300, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 4, generator=g) * 0.5 + nn.functional.one_hot(t, 4).float() * 2
    return Dataset(x, nn.functional.one_hot(t, 3).float())


@pytest.mark.parametrize("kind", ["dict", "tuple", "named"])
def test_a_model_returning_an_object_trains_on_its_logits(kind):
    torch.manual_seed(0)
    model = Returns(kind)
    trainer = Trainer(model, make_method("dfa"), torch.optim.Adam(model.parameters(), 1e-2), CE, progress=False)
    history = trainer.fit(blobs(), epochs=3, eval_set=blobs(seed=1), batch_size=30)
    assert history[-1]["test_accuracy"] > 0.9


def test_an_output_key_names_the_element_and_a_wrong_one_lists_the_tensors():
    model = select_output(Returns("scores"), "scores")
    assert model(torch.zeros(2, 4)).shape == (2, 3)
    select_output(model, "nothing")
    with pytest.raises(UnsupportedModelError, match="output key 'nothing'.*its tensors: scores, hidden"):
        model(torch.zeros(2, 4))


class TupleBlock(nn.Module):
    """A block that returns ``(output, extra)``, as attention layers and ``nn.LSTM`` do."""

    def __init__(self, width: int, returns_tuple: bool):
        super().__init__()
        self.linear, self.returns_tuple = nn.Linear(width, width), returns_tuple

    def forward(self, x):
        h = torch.tanh(self.linear(x))
        return (h, h.detach().mean()) if self.returns_tuple else h


class Stack(nn.Module):
    def __init__(self, returns_tuple: bool):
        super().__init__()
        self.stem = nn.Linear(4, 8)
        self.blocks = nn.ModuleList(TupleBlock(8, returns_tuple) for _ in range(3))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.stem(x)
        for block in self.blocks:
            out = block(h)
            h = out[0] if isinstance(out, tuple) else out
        return self.head(h)


def gradients(model: nn.Module, method_name: str, **options) -> dict[str, torch.Tensor]:
    torch.manual_seed(5)
    method = make_method(method_name, **options)
    method.attach(model, num_outputs=3, num_samples=8)
    x, t = torch.randn(8, 4), torch.randint(0, 3, (8,))
    method.step(model, x, t, torch.arange(8), CE)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_the_default_points_are_the_blocks_of_a_stack_and_may_return_tuples():
    torch.manual_seed(0)
    plain = Stack(returns_tuple=False)
    tupled = Stack(returns_tuple=True)
    tupled.load_state_dict(plain.state_dict())
    a, b = gradients(plain, "dfa"), gradients(tupled, "dfa")
    points = FeedbackPoints(tupled, None, "dfa")
    assert points.resolve(torch.zeros(2, 4)) == ["blocks.0", "blocks.1", "blocks.2"]
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert set(a) == {n for n, _ in plain.named_parameters()}


class Tied(nn.Module):
    """Token embedding, one hidden block, an output layer over the vocabulary: tied or two copies."""

    def __init__(self, tied: bool, vocabulary: int = 7, width: int = 5):
        super().__init__()
        self.embed = nn.Embedding(vocabulary, width)
        self.body = nn.Sequential(nn.Linear(width, width), nn.Tanh())
        self.head = nn.Linear(width, vocabulary, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(self.body(self.embed(tokens).mean(1)))


@pytest.mark.parametrize("method", ["dfa", "drtp"])
def test_a_tied_weight_gets_the_sum_of_what_each_owner_gives_it(method):
    """The tied weight's gradient equals the embedding's feedback gradient plus the head's true gradient, as
    computed on the same network with two separate copies of the weight."""
    torch.manual_seed(0)
    untied = Tied(tied=False)
    with torch.no_grad():
        untied.head.weight.copy_(untied.embed.weight)
    tied = Tied(tied=True)
    tied.load_state_dict({k: v for k, v in untied.state_dict().items() if k != "head.weight"}, strict=False)
    tokens = torch.tensor([[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 2, 1]])  # rows 3..6 never in the batch

    def step(model):
        torch.manual_seed(5)
        m = make_method(method)
        m.attach(model, num_outputs=7, num_samples=4)
        m.step(model, tokens, torch.tensor([3, 4, 5, 6]), torch.arange(4), CE)
        return m

    step(untied)
    expected = untied.embed.weight.grad + untied.head.weight.grad
    assert FeedbackPoints(tied, None, method).shared  # the tie is seen
    step(tied)
    assert torch.allclose(tied.embed.weight.grad, expected, rtol=1e-6, atol=1e-7)
    assert tied.embed.weight.grad[3:].abs().sum() > 0  # the head's gradient reaches rows absent from the batch


def test_unlocked_updates_refuse_a_tied_weight():
    method = make_method("drtp", unlocked=True)
    with pytest.raises(UnsupportedModelError, match="embed.weight = head.weight is shared"):
        method.attach(Tied(tied=True), num_outputs=7, num_samples=4)


HF_VIT = ("hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,patch_size=4,"
          "hidden_dropout_prob=0.0,attention_probs_dropout_prob=0.0")


@pytest.fixture
def transformers():
    return pytest.importorskip("transformers")


def test_a_hugging_face_model_trains_from_the_command_line(transformers, tmp_path):
    assert main(["train", "--method", "bp", "--model", "hf:ViTForImageClassification", "--hf-config", HF_VIT,
                 "--dataset", "digits", "--epochs", "3", "--lr", "1e-3", "--out", str(tmp_path / "bp")]) == 0
    assert json.loads((tmp_path / "bp" / "summary.json").read_text())["test_accuracy"] > 0.6
    assert main(["train", "--method", "dfa", "--model", "hf:ViTForImageClassification", "--hf-config", HF_VIT,
                 "--dataset", "digits", "--epochs", "1", "--out", str(tmp_path / "dfa")]) == 0
    summary = json.loads((tmp_path / "dfa" / "summary.json").read_text())
    assert summary["feedback_points"] == ["vit.layers.0.layernorm_before", "vit.layers.0.layernorm_after",
                                          "vit.layers.1.layernorm_before", "vit.layers.1.layernorm_after",
                                          "vit.layernorm"]  # pre-norm blocks: the norms are the points


@pytest.mark.parametrize("arguments,message", [
    (["--model", "hf:ViTForImageClassification", "--hf-config", "hiden_size=32"],
     "ViTConfig has no setting 'hiden_size'; did you mean hidden_size"),
    (["--model", "hf:VitForImageClassification"], "transformers has no model class 'VitForImageClassification'"),
    (["--model", "hf:ViTForImageClassification", "--hf-config", HF_VIT, "--output-key", "pooled"],
     "output key 'pooled' is not a tensor that the model returns"),
    (["--hf-config", "hidden_size=32"], "apply to hf:CLASS models"),
    (["--model", "hf:ResNetForImageClassification", "--hf-config", "depths=[1,1"], "a '[' without its ']'"),
    (["--model", "hf:ResNetForImageClassification", "--hf-config", "depths=[[1],1]"], "(not nested)"),
    (["--model", "hf:ResNetForImageClassification", "--hf-config", "depths=[]"],
     "hf:ResNetForImageClassification: building it from its settings failed: IndexError"),
])
def test_bad_hugging_face_settings_are_one_line(transformers, tmp_path, capsys, arguments, message):
    assert main(["train", "--method", "bp", "--dataset", "digits", "--epochs", "1", *arguments,
                 "--out", str(tmp_path / "run")]) == 2
    *above, last = capsys.readouterr().err.strip().splitlines()
    assert message in last and all(line.startswith("beyondbp: data digits") for line in above)


def test_list_settings_build_a_batchnorm_resnet_of_hugging_face(transformers):
    """Stage widths and depths are lists: ``key=[a,b]`` between the commas of the other settings."""
    assert parse_settings("embedding_size=8,hidden_sizes=[8, 16],depths=[1,2],layer_type=basic") == {
        "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 2], "layer_type": "basic"}
    spec = "hf:ResNetForImageClassification"
    model = build_hf_model(spec, parse_settings("embedding_size=8,hidden_sizes=[8,16],depths=[1,2]"), None,
                           (1, 8, 8), 3)
    assert [len(stage.layers) for stage in model.resnet.encoder.stages] == [1, 2]
    assert model.config.hidden_sizes == [8, 16] and model.config.num_channels == 1


def tiny_gpt2(transformers, tied: bool = True):
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=11, n_positions=8, n_embd=8, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0,
        tie_word_embeddings=tied))


def test_gpt2_tied_embedding_and_head_are_seen_as_shared(transformers):
    """Pre-norm blocks get their points at the norms, unless a weight is shared: the norms do not cut the
    residual stream, so the loss would reach the tied embedding through every block; the blocks cut it."""
    points = FeedbackPoints(tiny_gpt2(transformers), None, "dfa")
    assert list(points.shared.values()) == [["transformer.wte.weight", "lm_head.weight"]]
    assert points.resolve(torch.zeros(1, 4, dtype=torch.long)) == ["transformer.h.0", "transformer.h.1"]
    assert FeedbackPoints(tiny_gpt2(transformers, tied=False), None, "dfa").resolve(
        torch.zeros(1, 4, dtype=torch.long)) == ["transformer.h.0.ln_1", "transformer.h.0.ln_2",
                                                 "transformer.h.1.ln_1", "transformer.h.1.ln_2", "transformer.ln_f"]


@pytest.mark.parametrize("method", ["dfa", "f3:delayed_error_softmax"])
def test_a_tied_language_model_trains_at_its_blocks_and_refuses_points_that_do_not_cut_the_stream(transformers,
                                                                                                  method):
    x = torch.randint(0, 11, (4, 6))
    t = torch.randint(0, 11, (4, 6))
    lm = make_objective("ce", "lm")
    model = tiny_gpt2(transformers)
    m = make_method(method)
    m.attach(model, num_outputs=11, num_samples=4, task="lm", tokens=6)
    m.step(model, x, t, torch.arange(4), lm)
    assert all(p.grad is not None for p in model.parameters())
    model, refused = tiny_gpt2(transformers), make_method(method, feedback_points=("norms",))
    refused.attach(model, num_outputs=11, num_samples=4, task="lm", tokens=6)
    with pytest.raises(UnsupportedModelError, match=r"transformer.wte.weight = lm_head.weight is shared, and "
                                                    r"feedback point 'transformer.h.0.ln_2' reaches it past"):
        refused.step(model, x, t, torch.arange(4), lm)


def test_the_norms_rule_puts_points_at_every_normalisation_layer_in_running_order(transformers):
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=2,
                                                                 n_head=2, bos_token_id=0, eos_token_id=0))
    points = FeedbackPoints(model, ["norms"], "dfa")
    assert points.resolve(torch.zeros(1, 4, dtype=torch.long)) == [
        "transformer.h.0.ln_1", "transformer.h.0.ln_2", "transformer.h.1.ln_1", "transformer.h.1.ln_2",
        "transformer.ln_f"]
    named = nn.Sequential()
    named.add_module("norms", nn.Linear(2, 2))
    named.add_module("head", nn.Linear(2, 2))
    assert FeedbackPoints(named, ["norms"], "dfa").names == ["norms"]  # a module of that name is meant


class Recurrent(nn.Module):
    """A sequence classifier on the last state of an LSTM or a GRU."""

    def __init__(self, kind: type[nn.RNNBase]):
        super().__init__()
        self.rnn, self.head = kind(3, 8, batch_first=True), nn.Linear(8, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def cosine_with_backprop(model: nn.Module, method_name: str, x: torch.Tensor, t: torch.Tensor) -> float:
    CE(model(x), nn.functional.one_hot(t, 3).float()).backward()
    true = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad()
    method = make_method(method_name)
    method.attach(model, num_outputs=3)
    method.step(model, x, t, None, CE)
    estimate = torch.cat([p.grad.flatten() for p in model.parameters()])
    return float(torch.nn.functional.cosine_similarity(true, estimate, dim=0))


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
def test_forward_gradients_run_through_recurrent_layers(kind):
    """Averaged over many tangents, the estimate points along the true gradient (about sqrt(k / n) = 0.55 for
    k = 128 tangents on n ≈ 420 parameters; a wrong derivative gives about 0)."""
    torch.manual_seed(0)
    model = Recurrent(kind)
    x, t = torch.randn(6, 5, 3), torch.randint(0, 3, (6,))
    assert cosine_with_backprop(model, "fg:k128", x, t) > 0.35


def test_forward_gradients_through_batch_norm_update_its_statistics_once():
    """Backprop's reference pass records the batch mean m (running mean 0.1 m), fg's step records it once more
    (0.9 · 0.1 m + 0.1 m = 0.19 m): the statistics move as in a step of backprop, not k times or never."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    x, t = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    with torch.no_grad():
        m = model[0](x).mean((0, 2, 3))
    assert cosine_with_backprop(model, "fg:k256", x, t) > 0.35
    norm = model[1]
    assert int(norm.num_batches_tracked) == 2 and norm.track_running_stats
    assert torch.allclose(norm.running_mean, 0.19 * m, rtol=1e-5, atol=1e-6)


def test_forward_gradients_on_hugging_face_attention(transformers):
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    select_output(model)
    x, t = torch.randn(6, 1, 8, 8), torch.randint(0, 3, (6,))
    assert cosine_with_backprop(model, "fg:k256", x, t) > 0.2


SCALED = """
import torch
from torch import nn


class Mix(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.mixing = nn.Parameter(torch.eye(width) + 0.1 * torch.randn(width, width))

    def forward(self, x):
        return x @ self.mixing


def model(input_shape, num_outputs):
    width = 1
    for size in input_shape:
        width *= size
    return nn.Sequential(nn.Flatten(), nn.Linear(width, 32), nn.Tanh(), Mix(32), nn.Linear(32, num_outputs))
"""


def test_compare_lists_the_methods_that_refuse_the_model_and_runs_the_others(tmp_path):
    """fa has no rule for a module that multiplies by its own matrix: it is listed as refused, with the way
    out; the others run from the same command line, points included (bp ignores them)."""
    factory = tmp_path / "scaled.py"
    factory.write_text(SCALED)
    out = tmp_path / "compare"
    assert main(["compare", "--methods", "bp,fa,dfa", "--seeds", "1", "--model", f"{factory}:model",
                 "--feedback-points", "3", "--dataset", "digits", "--epochs", "1", "--no-progress",
                 "--out", str(out)]) == 0
    table = (out / "results.md").read_text()
    assert "| fa | refused: fa cannot handle layer '3' (Mix)" in table and "--exact-modules 3" in table
    assert [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "±" in line] \
        == ["bp", "dfa"]
    assert json.loads((out / "refused.json").read_text()).keys() == {"fa"}


def test_exact_modules_keep_the_true_backward_inside_them():
    """fa with the Mix module declared exact: by hand, the output layer sends δ_y B back (fa's rule), Mix's
    matrix M gets its true local gradient from it, hᵀ (δ_y B), and sends (δ_y B) Mᵀ on."""
    namespace: dict = {}
    exec(SCALED, namespace)
    torch.manual_seed(0)
    model = namespace["model"]((4,), 3)
    x, t = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with pytest.raises(UnsupportedModelError, match="exact module 'mixing' is not a module"):
        make_method("fa", exact_modules=["mixing"]).attach(model, num_outputs=3)
    method = make_method("fa", exact_modules=["3"])
    method.attach(model, num_outputs=3)
    method.step(model, x, t, None, CE)
    assert set(method.feedback) == {"1", "4"}
    with torch.no_grad():
        h = torch.tanh(model[1](x))
        y = model[4](h @ model[3].mixing)
        delta_y = (torch.softmax(y, 1) - nn.functional.one_hot(t, 3)) / len(x)
        delta_mixed = delta_y @ method.feedback["4"]
        delta_h = delta_mixed @ model[3].mixing.T
        delta_a = delta_h * (1 - h**2)
    assert torch.allclose(model[3].mixing.grad, h.T @ delta_mixed, rtol=1e-5, atol=1e-7)
    assert torch.allclose(model[1].weight.grad, delta_a.T @ x, rtol=1e-5, atol=1e-7)


class LayerScale(nn.Module):
    """ConvNeXt's and CaiT's per-channel gain: a module of its own whose only parameter is a vector."""

    def __init__(self, width):
        super().__init__()
        self.gain = nn.Parameter(1 + 0.1 * torch.randn(width))

    def forward(self, x):
        return x * self.gain


def test_modules_with_vector_parameters_keep_their_exact_backward_and_say_so():
    """Without a declaration, fa treats a layer scale as it treats a norm's affine weights (exact backward) and
    names it: the gradients equal those with the module declared exact."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), LayerScale(8), nn.Linear(8, 3))
    x, t = torch.randn(8, 4), torch.randint(0, 3, (8,))
    grads = []
    for exact in ([], ["2"]):
        model.zero_grad()
        method = make_method("fa", exact_modules=exact)
        torch.manual_seed(1)  # the same feedback matrices for both
        if exact:
            method.attach(model, num_outputs=3)
        else:
            with pytest.warns(UserWarning, match=r"fa keeps the exact backward of 1 module\(s\) whose own "
                                                 r"parameters are vectors.*: 2$"):
                method.attach(model, num_outputs=3)
        method.step(model, x, t, None, CE)
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    assert grads[0][2].abs().sum() > 0  # the gain learns


def test_gpt2_conv1d_gets_the_linear_rule_with_its_weight_transposed(transformers):
    """A Conv1D (x W + b, W stored in × out) under fa equals an nn.Linear holding Wᵀ under fa with the same B."""
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = nn.Sequential(Conv1D(6, 4), nn.Tanh(), nn.Linear(6, 3))
    linear = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    with torch.no_grad():
        linear[0].weight.copy_(conv[0].weight.T)
        linear[0].bias.copy_(conv[0].bias)
        linear[2].load_state_dict(conv[2].state_dict())
    a, b = gradients(conv, "fa"), gradients(linear, "fa")
    assert torch.allclose(a["0.weight"].T, b["0.weight"]) and torch.allclose(a["0.bias"], b["0.bias"])
    assert torch.allclose(a["2.weight"], b["2.weight"])


def test_a_sample_index_outside_the_training_set_is_named():
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    method = make_method("f3")
    method.attach(model, num_outputs=3, num_samples=10)
    with pytest.raises(BeyondBPError, match="sample index 12 is outside the training set of 10 samples"):
        method.step(model, torch.randn(3, 4), torch.tensor([0, 1, 2]), torch.tensor([1, 12, 3]), CE)


def test_a_model_whose_output_does_not_fit_the_data_is_one_line_before_anything_is_written(tmp_path, capsys):
    factory = tmp_path / "wide.py"
    factory.write_text("from torch import nn\n\n\ndef model(shape, n):\n"
                       "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 13))\n")
    out = tmp_path / "run"
    assert main(["train", "--model", f"{factory}:model", "--dataset", "digits", "--epochs", "1",
                 "--out", str(out)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "returns outputs of shape (2, 13) for 2 samples; the data needs [batch, 10] (10 classes" in last
    assert not out.exists()
