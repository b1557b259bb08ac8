"""Next-token prediction (task lm): targets per token, each method's signal per token, F³'s buffer per token and
its bounded stores, the causal transformer, corpora and sampling."""

from __future__ import annotations

import math
import sysconfig
from pathlib import Path

import pytest
import torch
from torch import nn

from beyondbp import RunConfig, Trainer, make_method, run
from beyondbp.cli import main
from beyondbp.data import Dataset
from beyondbp.data.corpus import Vocabulary, chunks, text_split
from beyondbp.errors import BeyondBPError
from beyondbp.metrics import evaluate
from beyondbp.models import gpt
from beyondbp.models.vit import TransformerBlock, TransformerShape
from beyondbp.objectives import IGNORE_INDEX, make_objective

CE = make_objective("ce", "lm")


def two_token_model() -> nn.Sequential:
    """Inputs ``[batch, 2 tokens, 2]`` -> a hidden block of width 4 per token -> 3 classes per token."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Sequential(nn.Linear(2, 4), nn.Tanh()), nn.Linear(4, 3))


def test_dfa_sends_each_tokens_error_to_its_position():
    """Hidden block: ∂L/∂h_t := (t_t - softmax(y_t)) B for each token t; the head: the true gradient of the mean
    cross-entropy over the 2 tokens."""
    model = two_token_model()
    x = torch.tensor([[[1.0, -0.5], [0.3, 2.0]]])
    t = torch.tensor([[2, 0]])
    method = make_method("dfa")
    method.attach(model, num_outputs=3, num_samples=1, task="lm", tokens=2)
    method.step(model, x, t, None, CE)
    w1, b1 = model[0][0].weight.detach(), model[0][0].bias.detach()
    w2, b2 = model[1].weight.detach(), model[1].bias.detach()
    h = torch.tanh(x[0] @ w1.T + b1)  # [2 tokens, 4]
    y = h @ w2.T + b2
    target = torch.eye(3)[t[0]]
    error = target - torch.softmax(y, dim=1)  # [2 tokens, 3]
    delta_h = error @ method.feedback[0]  # each token's own error
    delta_a = delta_h * (1 - h ** 2)
    torch.testing.assert_close(model[0][0].weight.grad, delta_a.T @ x[0])
    torch.testing.assert_close(model[0][0].bias.grad, delta_a.sum(0))
    delta_y = -error / 2  # mean over the 2 tokens
    torch.testing.assert_close(model[1].weight.grad, delta_y.T @ h)
    torch.testing.assert_close(model[1].bias.grad, delta_y.sum(0))


def test_a_padding_token_counts_in_no_loss_and_sends_no_signal():
    model = two_token_model()
    x = torch.tensor([[[1.0, -0.5], [0.3, 2.0]]])
    method = make_method("dfa")
    method.attach(model, num_outputs=3, num_samples=1, task="lm", tokens=2)
    result = method.step(model, x, torch.tensor([[2, IGNORE_INDEX]]), None, CE)
    y = model(x)[0].detach()
    torch.testing.assert_close(result.loss, -torch.log_softmax(y[0], dim=0)[2])
    h = torch.tanh(x[0, 0] @ model[0][0].weight.detach().T + model[0][0].bias.detach())
    delta_a = ((torch.eye(3)[2] - torch.softmax(y[0], dim=0)) @ method.feedback[0]) * (1 - h ** 2)
    torch.testing.assert_close(model[0][0].weight.grad, delta_a[:, None] * x[0, 0])  # the first token's alone


def test_f3_reads_a_tokens_error_one_epoch_after_it_was_written():
    model = two_token_model()
    x = torch.randn(3, 2, 2)
    t = torch.tensor([[0, 1], [2, 2], [1, 0]])
    method = make_method("f3:delayed_error_softmax")
    method.attach(model, num_outputs=3, num_samples=3, task="lm", tokens=2)
    index = torch.tensor([2, 0, 1])
    before = method.buffer.read(index, CE.targets(t, 3))
    torch.testing.assert_close(before, CE.targets(t, 3))  # epoch 1 reads the target (DRTP)
    method.step(model, x, t, index, CE)
    y = model(x).detach()  # the parameters have not moved: no optimizer here
    stored = CE.targets(t, 3) - torch.softmax(y, dim=-1)
    torch.testing.assert_close(method.buffer.values[index], stored)
    torch.testing.assert_close(method.buffer.read(index[:1], CE.targets(t[:1], 3)), stored[:1])


def test_the_low_dimensional_store_with_the_identity_is_the_full_store():
    x, t, index = torch.randn(4, 2, 2), torch.tensor([[0, 1], [2, 2], [1, 0], [0, 0]]), torch.arange(4)
    grads, feedback = [], None
    for rank in (0, 3):
        model = two_token_model()
        method = make_method("f3:delayed_error_softmax", buffer_rank=rank)
        method.attach(model, num_outputs=3, num_samples=4, task="lm", tokens=2)
        if rank:
            method.buffer.projection, method.feedback = torch.eye(3), feedback
        for _ in range(2):  # the second step reads what the first wrote
            model.zero_grad()
            method.step(model, x, t, index, CE)
        grads.append([p.grad.clone() for p in model.parameters()])
        feedback = method.feedback
    for full, low in zip(*grads):
        torch.testing.assert_close(full, low)


def test_bounded_stores_are_smaller_and_named_in_bytes():
    sizes = {}
    for rank, dtype in ((0, "float32"), (0, "float16"), (4, "float16")):
        method = make_method("f3:delayed_error_softmax", buffer_rank=rank, buffer_dtype=dtype)
        method.attach(two_token_model(), num_outputs=3, num_samples=10, task="lm", tokens=2)
        sizes[rank, dtype] = method.buffer.nbytes
    assert sizes == {(0, "float32"): 10 * 2 * 3 * 4, (0, "float16"): 10 * 2 * 3 * 2, (4, "float16"): 10 * 2 * 4 * 2}
    with pytest.raises(BeyondBPError, match="needs the full error"):
        make_method("f3:delayed_error_one_hot", buffer_rank=4)
    with pytest.raises(BeyondBPError, match="'dfa' takes no option 'buffer_rank'"):
        make_method("dfa", buffer_rank=4)


def test_the_perplexity_of_a_unigram_model_is_the_unigram_perplexity():
    probabilities = torch.tensor([0.5, 0.3, 0.2])

    class Unigram(nn.Module):
        def forward(self, x):
            return probabilities.log().expand(*x.shape, 3)

    t = torch.tensor([[0, 0, 1, 2], [1, 0, 2, 0]])
    data = Dataset(torch.zeros(2, 4, dtype=torch.long), t, num_classes=3)
    expected = -probabilities.log()[t].mean().item()
    metrics = evaluate(Unigram(), data, CE, "lm")
    assert metrics["test_loss"] == pytest.approx(expected, rel=1e-6)
    assert metrics["test_perplexity"] == pytest.approx(math.exp(expected), rel=1e-6)
    assert metrics["test_bits"] == pytest.approx(expected / math.log(2), rel=1e-6)
    assert metrics["test_accuracy"] == pytest.approx(4 / 8)


def test_the_causal_transformer_never_looks_ahead():
    torch.manual_seed(0)
    model = gpt((6,), 5, TransformerShape(depth=2, width=8, heads=2, mlp=16)).eval()
    x = torch.tensor([[0, 1, 2, 3, 4, 0]])
    changed = x.clone()
    changed[0, 4] = 1
    y, y_changed = model(x), model(changed)
    torch.testing.assert_close(y[0, :4], y_changed[0, :4])
    assert not torch.allclose(y[0, 4:], y_changed[0, 4:])


def test_tied_weights_share_one_matrix_and_get_both_owners_gradients():
    torch.manual_seed(0)
    model = gpt((4,), 6, TransformerShape(depth=1, width=8, heads=2, mlp=16), tie_weights=True)
    assert model[0][0].weight is model[-1][1].weight
    method = make_method("dfa")
    method.attach(model, num_outputs=6, num_samples=2, task="lm", tokens=4)
    x, t = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]]), torch.tensor([[1, 2, 3, 4], [2, 1, 0, 5]])
    method.step(model, x, t, None, CE)
    head_only = torch.autograd.grad(CE(model(x), CE.targets(t, 6)), model[-1][1].weight)[0]
    # rows of tokens that never occur as inputs get the head's gradient alone
    for token in (4, 5):
        torch.testing.assert_close(model[0][0].weight.grad[token], head_only[token])


def text() -> str:
    return (Path(sysconfig.get_paths()["stdlib"]) / "argparse.py").read_text()[:60000]


def test_a_corpus_is_cut_in_its_order_into_chunks_with_the_next_token_as_target():
    data = text_split("argparse", text(), 32, "char")
    whole = data.vocabulary.encode(text()[:54000])
    torch.testing.assert_close(data.train.x[1], torch.as_tensor(whole[32:64]))
    torch.testing.assert_close(data.train.t[1], torch.as_tensor(whole[33:65]))
    assert len(data.train) == (54000 - 1) // 32 and data.task == "lm"
    assert data.vocabulary.decode(data.train.x[0].tolist()) == text()[:32]
    vocabulary = Vocabulary.of("ab", "char")
    assert vocabulary.decode(vocabulary.encode("abc").tolist()) == "ab\ufffd"  # unseen characters: one id
    data = chunks(Vocabulary.of("x", "byte").encode("héllo"), 2, 256)
    assert data.num_outputs == 256 and data.x.tolist() == [[104, 195], [169, 108]]


def test_methods_learn_the_text_beyond_the_head_alone():
    """Four epochs on 54 kB of Python source, character level: backprop and DFA below the unigram model's loss,
    DFA below training the output block alone, and far below it with the norms after the residual sums or
    with its signal entering at the norms (points rule ``norms``)."""
    data = text_split("argparse", text(), 32, "char")
    counts = torch.bincount(data.train.t.flatten(), minlength=data.train.num_outputs).float() + 1
    unigram = -(counts / counts.sum()).log()[data.test.t.flatten()].mean().item()
    losses = {}
    for method, lr, norm, points in (("bp", 3e-3, "pre", ()), ("shallow", 3e-3, "pre", ()), ("dfa", 1e-3, "pre", ()),
                                     ("dfa", 1e-3, "post", ()), ("dfa", 1e-3, "pre", ("norms",))):
        torch.manual_seed(0)
        shape = TransformerShape(depth=2, width=32, heads=2, mlp=64, norm=norm)
        model = gpt((32,), data.train.num_outputs, shape)
        options = {"feedback_points": points} if points else {}
        trainer = Trainer(model, make_method(method, **options), torch.optim.Adam(model.parameters(), lr), CE,
                          task="lm", progress=False)
        losses[method, norm, points] = trainer.fit(data.train, 4, data.test, batch_size=16)[-1]["test_loss"]
        if points:
            assert trainer.method.points.names == ["1.norm1", "1.norm2", "2.norm1", "2.norm2", "3.0"]
    losses = {key if key[2] else key[:2]: value for key, value in losses.items()}
    assert losses["bp", "pre"] < unigram - 0.8
    assert losses["dfa", "pre"] < unigram - 0.15
    assert losses["dfa", "pre"] < losses["shallow", "pre"] - 0.04
    assert losses["dfa", "post"] < losses["shallow", "pre"] - 0.25
    assert losses["dfa", "pre", ("norms",)] < losses["shallow", "pre"] - 0.2  # the normalised residual stream


def test_a_post_norm_block_normalises_each_residual_sum():
    torch.manual_seed(0)
    block = TransformerBlock(8, 2, 4, 16, "gelu", causal=True, norm="post")
    x = torch.randn(2, 5, 8)
    middle = block.norm1(x + block.attention(x))
    torch.testing.assert_close(block(x), block.norm2(middle + block.mlp(middle)))
    with pytest.raises(ValueError, match="unknown norm place 'middle'; known: pre, post"):
        TransformerBlock(8, 2, 4, 16, "gelu", norm="middle")


def test_a_point_that_loses_the_token_axis_is_named():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.Unflatten(1, (2, 3)), nn.Linear(3, 3))
    method = make_method("dfa", feedback_points=["1"])
    method.attach(model, num_outputs=3, num_samples=1, task="lm", tokens=2)
    with pytest.raises(BeyondBPError, match="feedback point '1' outputs shape \\(1, 6\\).*\\[batch, 2, width\\]"):
        method.step(model, torch.randn(1, 2, 2), torch.tensor([[0, 1]]), None, CE)


@pytest.mark.parametrize("arguments, message", [
    (["--data", "{corpus}"], "give --context TOKENS"),
    (["--data", "{corpus}", "--context", "100000"], "too short for samples of 100000 tokens"),
    (["--data", "{corpus}", "--context", "8", "--task", "classification"], "its task is lm"),
    (["--data", "{short}", "--context", "8", "--task", "lm"], "task lm reads a text corpus \\(.txt\\)"),
    (["--dataset", "digits", "--context", "8"], "--context TOKENS applies to a text corpus"),
    (["--data", "{corpus}", "--context", "8", "--model", "mlp"], "fails on the data's first samples \\(torch.int64"),
    (["--data", "{corpus}", "--context", "8", "--model", "{short}:model"],
     "\\(2, 7, 61\\).*\\[2, 8, 61\\] \\(the token axes differ"),
    (["--data", "{corpus}", "--context", "8", "--model", "{short}:small"],
     "index out of range in self \\(token ids go up to \\d+: an embedding needs \\d+ rows\\)"),
    (["--dataset", "digits", "--train-samples", "100", "--model", "{short}:small"],
     "float32 .*\\(the model embeds token ids; these samples are numbers"),
])
def test_bad_language_model_input_is_one_line(tmp_path, capsys, arguments, message):
    corpus, short = tmp_path / "corpus.txt", tmp_path / "short.py"
    corpus.write_text(text()[:3000])
    short.write_text("from torch import nn\n\n\nclass Last(nn.Module):\n    def forward(self, x):\n"
                     "        return x[:, 1:]\n\n\ndef model(shape, n):\n"
                     "    return nn.Sequential(nn.Embedding(n, 4), nn.Linear(4, n), Last())\n\n\n"
                     "def small(shape, n):\n    return nn.Sequential(nn.Embedding(3, 4), nn.Linear(4, n))\n")
    arguments = [a.format(corpus=corpus, short=short) for a in arguments]
    assert main(["train", *arguments, "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("beyondbp: data ") for line in lines[:-1])
    assert lines[-1].startswith("beyondbp: error: ")
    import re
    assert re.search(message, lines[-1]), lines[-1]


def test_a_class_index_outside_the_vocabulary_is_named():
    with pytest.raises(BeyondBPError, match="class index 7 is out of range for 3 outputs"):
        CE.targets(torch.tensor([[0, 7]]), 3)


def test_train_then_generate_from_the_command_line(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text()[:20000])
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus), "--context", "16", "--model", "gpt", "--depth", "1", "--width", "16",
                 "--heads", "2", "--mlp", "32", "--method", "f3", "--buffer-dtype", "float16", "--epochs", "1",
                 "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["generate", "--run", str(out), "--prompt", "def ", "--tokens", "30", "--seed", "1"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("def ") and len(first.rstrip("\n")) >= 4 + 30 - first.count("\n")
    assert main(["generate", "--run", str(out), "--prompt", "def ", "--tokens", "30", "--seed", "1"]) == 0
    assert capsys.readouterr().out == first  # seeded


def test_the_ngram_floors_are_counted_on_the_training_part():
    from beyondbp.data import DataSplit
    from beyondbp.ngram import ngram_losses

    train = Dataset(torch.tensor([[0, 1, 0, 1]]), torch.tensor([[1, 0, 1, 0]]), num_classes=2)
    test = Dataset(torch.tensor([[0, 0]]), torch.tensor([[1, 1]]), num_classes=2)
    floors = ngram_losses(DataSplit("toy", "lm", train, test))
    # unigram: (2 + 1) / (4 + 2) for token 1; bigram: after 0, token 1 followed 2 times: (2 + 1) / (2 + 2)
    assert floors["unigram"] == pytest.approx(-math.log(3 / 6))
    assert floors["bigram"] == pytest.approx(-math.log(3 / 4))
    assert floors["train_tokens"] == 4


def test_a_bpe_vocabulary_is_trained_on_the_training_part_and_round_trips():
    pytest.importorskip("tokenizers")
    data = text_split("argparse", text(), 32, "bpe", bpe_size=300)
    vocabulary = data.vocabulary
    assert data.train.num_outputs == len(vocabulary) == 300
    tail = text()[-500:]
    assert vocabulary.decode(vocabulary.encode(tail).tolist()) == tail
    assert len(vocabulary.encode(text()[:54000])) < 0.8 * 54000  # merges shorten the text
    assert text_split("argparse", text(), 32, "bpe", bpe_size=300).vocabulary == vocabulary  # the same merges
    with pytest.raises(BeyondBPError, match="at least 257 tokens"):
        text_split("argparse", text(), 32, "bpe", bpe_size=100)


def test_a_run_reports_bits_per_character_whatever_the_tokenizer(tmp_path):
    """Bits per token over the characters each token spells: a BPE token spells several, a character one."""
    pytest.importorskip("tokenizers")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text()[:20000])
    settings = dict(data=str(corpus), context=16, model="gpt", depth=1, width=16, heads=2, mlp=32, epochs=1)
    bpe = run(RunConfig(**settings, tokenizer="bpe", bpe_size=300), progress=False)
    split = text_split("corpus", text()[:20000], 16, "bpe", bpe_size=300)
    test_text = split.vocabulary.decode(split.test.t.flatten().tolist())
    assert bpe["test_bits_per_character"] == pytest.approx(bpe["test_bits"] * split.test.t.numel() / len(test_text))
    assert bpe["test_bits_per_character"] < 0.6 * bpe["test_bits"]  # about two characters per token
    char = run(RunConfig(**settings, tokenizer="char"), progress=False)
    assert char["test_bits_per_character"] == pytest.approx(char["test_bits"])


@pytest.mark.slow
@pytest.mark.parametrize("execution", [["--stages", "2", "--balance", "time"], ["--nproc", "2"]])
def test_f3_on_a_corpus_runs_on_stages_and_data_parallel_ranks(tmp_path, execution):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text()[:8000])
    assert main(["train", "--data", str(corpus), "--context", "16", "--model", "gpt", "--depth", "2", "--width", "16",
                 "--heads", "2", "--mlp", "32", "--method", "f3", *execution, "--epochs", "2",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    import json
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"] == "lm" and summary["test_loss"] < 4.5 and summary["buffer_bytes"] > 0


def test_the_downloadable_corpora_read_their_files_from_the_data_folder(tmp_path):
    from beyondbp.data import load_dataset

    (tmp_path / "tiny-shakespeare").mkdir()
    (tmp_path / "tiny-shakespeare" / "input.txt").write_text(text()[:5000])
    shakespeare = load_dataset("tiny-shakespeare", tmp_path, context=16)
    assert shakespeare.task == "lm" and shakespeare.source == str(tmp_path / "tiny-shakespeare")
    assert shakespeare.vocabulary.decode(shakespeare.train.x[0].tolist()) == text()[:16]
    folder = tmp_path / "wikitext-103" / "wikitext-103-raw"
    folder.mkdir(parents=True)
    (folder / "wiki.train.raw").write_text(text()[:4000])
    (folder / "wiki.test.raw").write_text(text()[4000:5000])
    wikitext = load_dataset("wikitext-103", tmp_path, context=16, tokenizer="byte")
    assert len(wikitext.test) == (1000 - 1) // 16 and wikitext.train.num_outputs == 256
    with pytest.raises(BeyondBPError, match="wikitext-103.*pass --download"):
        load_dataset("wikitext-103", tmp_path / "nowhere")
