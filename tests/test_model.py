"""The Transformer: masking, positions, the key/value cache, and that it can learn."""

import math

import pytest
import torch

from nmt.decode import beam_search, greedy_decode
from nmt.lit import label_smoothed_nll
from nmt.model import ARCHS, Transformer, model_config, sinusoidal_positions
from nmt.residual import RESIDUALS

V, PAD, BOS, EOS = 40, 0, 2, 3


EVERY_VARIANT = [(name, {"one": 1, "positive": 0.5, "integer": 2}[cls.lambda_rule]) for name, cls in RESIDUALS.items()]
"""Every registered variant with a λ it takes."""


def tiny(skip="post_ln", lam=1.0, **kw):
    torch.manual_seed(0)
    return Transformer(model_config("tiny", V, skip=skip, lam=lam, dropout=0.0, **kw)).eval()


def tokens(*shape, seed=0):
    return torch.randint(4, V, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("skip,lam", [("post_ln", 1), ("pre_ln", 1), ("rskip_ln", 2), ("xskip", 0.5)])
def test_decoder_cannot_see_future_tokens(skip, lam):
    model = tiny(skip, lam)
    src, tgt = tokens(2, 7), tokens(2, 6, seed=1)
    changed = tgt.clone()
    changed[:, 4:] = tokens(2, 2, seed=2)
    a, b = model(src, tgt), model(src, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])  # positions before the change are untouched
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_source_padding_does_not_change_the_output():
    model = tiny()
    src, tgt = tokens(1, 5), tokens(1, 4, seed=1)
    padded = torch.cat([src, torch.full((1, 3), PAD)], dim=1)
    torch.testing.assert_close(model(src, tgt), model(padded, tgt), atol=1e-5, rtol=1e-5)


def test_sinusoidal_positions_match_the_paper_formula():
    d = 6
    table = sinusoidal_positions(50, d)
    for pos in (0, 1, 17, 49):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_embedding_is_scaled_and_shared_with_the_output_projection():
    model = tiny()
    emb = model.embed
    t = tokens(1, 3)
    expected = emb.tokens.weight[t] * math.sqrt(64) + sinusoidal_positions(3, 64)
    torch.testing.assert_close(emb(t), expected)
    assert model.embed.tokens.weight.abs().sum(-1)[PAD] == 0  # padding row starts at zero
    vocab_matrices = [n for n, p in model.named_parameters() if p.shape == (V, 64)]
    assert vocab_matrices == ["embed.tokens.weight"]  # source, target and output share one matrix
    with torch.no_grad():
        model.embed.tokens.weight[7] += 1.0  # moving one row moves that word's output logit
        src, tgt = tokens(1, 4), tokens(1, 3, seed=1)
        memory, mask = model.encode(src)
        h = model.decoder(model.embed(tgt), memory, mask)
        torch.testing.assert_close(model.decode(tgt, memory, mask), h @ model.embed.tokens.weight.T)


def final_norms(stack):
    return [m for m in stack.ends.modules() if isinstance(m, torch.nn.LayerNorm)]


def test_final_norm_only_for_pre_norm_blocks():
    pre = tiny("pre_ln")
    assert len(final_norms(pre.encoder)) == len(final_norms(pre.decoder)) == 1
    src = tokens(2, 5)
    memory, _ = pre.encode(src)  # the encoder's output is normalised: mean 0, variance 1 at every position
    torch.testing.assert_close(memory.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    for skip, lam in [("post_ln", 1), ("skip", 1), ("rskip_ln", 2), ("xskip_ln", 2)]:
        model = tiny(skip, lam)
        assert final_norms(model.encoder) == final_norms(model.decoder) == []


def test_checkpoints_from_before_the_stack_ends_module_still_load():
    """A pre-norm model's final LayerNorms were saved as ``encoder.final_norm.*``; they are ``encoder.ends.norm.*`` now."""
    pre = tiny("pre_ln")
    old = {k.replace("ends.norm", "final_norm"): v for k, v in pre.state_dict().items()}
    assert "encoder.final_norm.weight" in old and "decoder.final_norm.bias" in old
    with torch.no_grad():
        old["encoder.final_norm.weight"] = torch.full_like(old["encoder.final_norm.weight"], 2.0)
    loaded = tiny("pre_ln")
    loaded.load_state_dict(old)
    assert loaded.encoder.ends.norm.weight.eq(2.0).all()
    assert torch.equal(loaded.decoder.ends.norm.bias, pre.decoder.ends.norm.bias)


@pytest.mark.parametrize("skip,lam", [(s, lam) for s, lam in EVERY_VARIANT if s != "deepnorm"] + [("rskip_ln", 3)])
def test_same_initialisation_for_every_variant(skip, lam):
    """Weights that all variants share are initialised identically from the same seed (DeepNorm's are scaled by its
    β on purpose: tests/test_variants.py)."""
    a, b = tiny("post_ln").state_dict(), tiny(skip, lam).state_dict()
    shared = [k for k in a if k in b and "residual" not in k and "ends" not in k]
    assert len(shared) > 20
    for k in shared:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_presets_match_the_paper():
    assert ARCHS["base"] | {} == dict(d_model=512, d_ff=2048, n_heads=8, encoder_layers=6, decoder_layers=6, dropout=0.1)
    assert ARCHS["big"]["d_model"] == 1024 and ARCHS["big"]["n_heads"] == 16 and ARCHS["big"]["dropout"] == 0.3
    assert ARCHS["small"]["encoder_layers"] == ARCHS["small"]["decoder_layers"] == 6
    with pytest.raises(ValueError, match="unknown --arch"):
        model_config("huge", V)


def trained_like(skip, lam):
    """A tiny model whose residual parameters are away from their initial values (e.g. ReZero's α = 0 would hide
    every sublayer), with a data-dependent initialisation run if the variant has one."""
    model = tiny(skip, lam)
    model.data_dependent_init(tokens(3, 9, seed=7), tokens(3, 6, seed=8))
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "residual" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("skip,lam", EVERY_VARIANT)
def test_cached_steps_give_the_same_logits_as_the_full_pass(skip, lam):
    model = trained_like(skip, lam)
    src = tokens(3, 9)
    src[0, 5:] = PAD  # sentences of different lengths in one padded batch
    src[1, 7:] = PAD
    tgt = tokens(3, 6, seed=3)
    full = model(src, tgt)
    memory, mask = model.encode(src)
    cache = model.new_cache()
    steps = torch.cat([model.decode(tgt[:, t : t + 1], memory, mask, cache) for t in range(6)], dim=1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("skip,lam", EVERY_VARIANT)
def test_greedy_and_beam_with_and_without_cache_agree(skip, lam):
    model = trained_like(skip, lam)
    src = tokens(4, 8)
    src[2, 3:] = PAD
    a = greedy_decode(model, src, BOS, EOS, max_len_a=1.0, max_len_b=5, use_cache=True)
    b = greedy_decode(model, src, BOS, EOS, max_len_a=1.0, max_len_b=5, use_cache=False)
    assert a == b
    kw = dict(beam=3, lenpen=0.6, max_len_a=1.0, max_len_b=4)
    assert beam_search(model, src, BOS, EOS, use_cache=True, **kw) == beam_search(model, src, BOS, EOS, use_cache=False, **kw)
    lengths = (src != PAD).sum(1)
    assert all(len(h) <= int(1.0 * n + 5) for h, n in zip(a, lengths.tolist()))


def test_label_smoothed_loss_formula():
    logits = torch.randn(2, 3, V, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([[5, 6, PAD], [7, PAD, PAD]])
    loss, nll = label_smoothed_nll(logits, target, 0.1, PAD)
    lp = torch.log_softmax(logits, -1)
    pos = [(0, 0), (0, 1), (1, 0)]
    exp_nll = sum(-lp[b, t, target[b, t]] for b, t in pos)
    exp_loss = sum(0.9 * -lp[b, t, target[b, t]] + 0.1 * -lp[b, t].mean() for b, t in pos)
    torch.testing.assert_close(nll, exp_nll)
    torch.testing.assert_close(loss, exp_loss)


@pytest.mark.parametrize("skip,lam", [("post_ln", 1), ("rskip_ln", 2)])
def test_tiny_model_overfits_one_batch(skip, lam):
    """Memorising a copy-and-reverse batch: loss near zero and greedy decoding reproduces the targets."""
    torch.manual_seed(0)
    model = Transformer(model_config("tiny", V, skip=skip, lam=lam, dropout=0.0))
    src = tokens(4, 6, seed=5)
    body = src.flip(1)
    tgt_in = torch.cat([torch.full((4, 1), BOS), body], 1)
    tgt_out = torch.cat([body, torch.full((4, 1), EOS)], 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss, _ = label_smoothed_nll(model(src, tgt_in), tgt_out, 0.0, PAD)
        opt.zero_grad()
        (loss / tgt_out.numel()).backward()
        opt.step()
    assert loss.item() / tgt_out.numel() < 0.05
    model.eval()
    assert greedy_decode(model, src, BOS, EOS) == body.tolist()


@pytest.mark.parametrize("init", ["xavier", "fairseq"])
def test_initialisation_schemes(init):
    torch.manual_seed(0)
    d, ff = 64, 256
    model = Transformer(model_config("tiny", V, init=init))
    layer = model.encoder.layers[0]
    qkv, out, w1, w2 = layer.self_attn.in_proj, layer.self_attn.out_proj, layer.ff.w1, layer.ff.w2

    def fills(weight, bound):  # uniform on ±bound: never beyond it, and close to it somewhere
        return weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound

    assert fills(qkv.weight, (3 / (2 * d)) ** 0.5)  # W^Q, W^K, W^V: Xavier with gain 1/√2 in both schemes
    assert fills(out.weight, (6 / (2 * d)) ** 0.5) and not out.bias.any()
    if init == "xavier":
        assert fills(w1.weight, (6 / (d + ff)) ** 0.5) and fills(w2.weight, (6 / (d + ff)) ** 0.5)
        assert not qkv.bias.any() and not w1.bias.any() and not w2.bias.any()
    else:  # fairseq: PyTorch's default nn.Linear initialisation U(±1/√fan_in), biases included
        assert fills(w1.weight, d**-0.5) and fills(w1.bias, d**-0.5) and fills(qkv.bias, d**-0.5)
        assert fills(w2.weight, ff**-0.5) and fills(w2.bias, ff**-0.5)
    with pytest.raises(ValueError, match="unknown init"):
        model_config("tiny", V, init="kaiming")
