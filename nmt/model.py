"""The Transformer of Vaswani et al. (2017), "Attention Is All You Need", with pluggable residual blocks.

Read top to bottom; each class is one box of the paper's Figure 1:

    Embedding           E[token]·√d_model + PE(pos), then dropout                      (§3.4, §3.5)
    MultiHeadAttention  Concat(head₁…head_h)W^O, headᵢ = softmax(QWᵢ^Q (KWᵢ^K)ᵀ/√d_k) VWᵢ^V  (§3.2)
    FeedForward         max(0, xW₁ + b₁)W₂ + b₂                                         (§3.3)
    EncoderLayer        self-attention, feed-forward                                    (§3.1)
    DecoderLayer        masked self-attention, encoder-decoder attention, feed-forward  (§3.1)
    Encoder / Decoder   N layers, between the residual variant's stack ends (e.g. a final LayerNorm)
    Transformer         encoder + decoder; output projection tied to the embedding      (§3.4)

The one departure from the paper is deliberate and is the point of the project: every sublayer is
wrapped by a residual block from ``nmt.residual`` (``--skip NAME``) instead of the fixed
``LayerNorm(x + Sublayer(x))`` of §3.1; ``post_ln`` is that fixed block.

Conventions, the same for every residual variant:
- one joint vocabulary: source embedding, target embedding and the output projection share one matrix;
- initialisation (``ModelConfig.init``, see ``Transformer.reset_parameters``): attention weights Xavier-uniform
  (W^Q, W^K, W^V with gain 1/√2), the feed-forward layers and the Q/K/V biases PyTorch's default (``"fairseq"``, the
  default: it trains better, docs/benchmarks.md) or Xavier-uniform with zero biases (``"xavier"``); token
  embeddings N(0, d_model^-½) with the padding row 0, so that after the √d_model scale they have unit variance
  like the positional encodings; LayerNorm γ = 1, β = 0; a residual variant may change
  the initialisation of what it wraps (DeepNorm) or run a one-time initialisation from data (Admin,
  ``Transformer.data_dependent_init``);
- dropout: on the sum of embeddings and positions, and on every sublayer output inside the residual
  block (``dropout``, Pdrop = 0.1 in the paper); optionally on attention weights
  (``attention_dropout``) and after the ReLU (``activation_dropout``), both 0 by default as in the paper.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.residual import Place, State, build_residual, build_stack_ends, residual_class

INITS = ("xavier", "fairseq")
"""Initialisation schemes of the linear layers (``--init``); see ``Transformer.reset_parameters``."""


@dataclass
class ModelConfig:
    """Sizes and choices that define a model; saved in every checkpoint."""

    vocab_size: int
    d_model: int = 512
    d_ff: int = 2048
    n_heads: int = 8
    encoder_layers: int = 6
    decoder_layers: int = 6
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    skip: str = "post_ln"
    lam: float = 1.0
    pad_id: int = 0
    max_positions: int = 1024
    init: str = "fairseq"

    def __post_init__(self):
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; known: {', '.join(INITS)}")

    def to_dict(self) -> dict:
        return asdict(self)


ARCHS: dict[str, dict] = {
    # For tests and smoke runs.
    "tiny": dict(d_model=64, d_ff=256, n_heads=4, encoder_layers=2, decoder_layers=2, dropout=0.1),
    # The paper's depth at half the width of "small": for deep-stack studies on a CPU (with --layers 18, say).
    "narrow": dict(d_model=128, d_ff=512, n_heads=4, encoder_layers=6, decoder_layers=6, dropout=0.1),
    # The paper's depth (the variants differ with depth) at a width a CPU can train.
    "small": dict(d_model=256, d_ff=1024, n_heads=4, encoder_layers=6, decoder_layers=6, dropout=0.1),
    # Vaswani et al. 2017, Table 3: "base" and "big".
    "base": dict(d_model=512, d_ff=2048, n_heads=8, encoder_layers=6, decoder_layers=6, dropout=0.1),
    "big": dict(d_model=1024, d_ff=4096, n_heads=16, encoder_layers=6, decoder_layers=6, dropout=0.3),
}
"""Named size presets (``--arch``)."""


class Embedding(nn.Module):
    """Token embedding scaled by √d_model plus sinusoidal positions, then dropout (§3.4, §3.5).

    PE(pos, 2i) = sin(pos / 10000^(2i/d_model)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        self.scale = math.sqrt(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.register_buffer("positions", sinusoidal_positions(cfg.max_positions, cfg.d_model), persistent=False)

    def forward(self, tokens: Tensor, start: int = 0) -> Tensor:
        """tokens (B, T) → (B, T, d_model); ``start`` is the position of the first token."""
        end = start + tokens.size(1)
        if end > self.positions.size(0):  # longer than ever seen: extend the table
            self.positions = sinusoidal_positions(2 * end, self.positions.size(1)).to(self.positions)
        return self.dropout(self.tokens(tokens) * self.scale + self.positions[start:end])


def sinusoidal_positions(length: int, d_model: int) -> Tensor:
    """The (length, d_model) table of §3.5."""
    pos = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    inv_freq = torch.pow(10000.0, -torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    table = torch.zeros(length, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq)[:, : d_model // 2]
    return table.float()


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention (§3.2), through ``F.scaled_dot_product_attention``.

    Self-attention when ``memory`` is None, encoder-decoder attention otherwise (queries from ``x``,
    keys and values from ``memory``). Q, K and V are one (3·d, d) projection, like the paper's
    W^Q, W^K, W^V side by side. With a ``cache`` (incremental decoding) the keys and values of earlier
    steps are kept: self-attention appends the new position's, cross-attention computes the
    encoder's once.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by the number of heads ({n_heads})")
        self.n_heads = n_heads
        self.dropout = dropout
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        mask: Tensor | None = None,
        causal: bool = False,
        cache: dict | None = None,
    ) -> Tensor:
        """x (B, T, d); memory (B, S, d); mask (B, 1, 1, S) bool, True where a key may be attended."""
        d = x.size(-1)
        if memory is None:
            q, k, v = self.in_proj(x).split(d, dim=-1)
            k, v = self._heads(k), self._heads(v)
            if cache is not None:
                if "k" in cache:
                    k = torch.cat([cache["k"], k], dim=2)
                    v = torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
        else:
            w, b = self.in_proj.weight, self.in_proj.bias
            q = F.linear(x, w[:d], b[:d])
            if cache is not None and "k" in cache:
                k, v = cache["k"], cache["v"]
            else:
                k, v = F.linear(memory, w[d:], b[d:]).split(d, dim=-1)
                k, v = self._heads(k), self._heads(v)
                if cache is not None:
                    cache["k"], cache["v"] = k, v
        q = self._heads(q)
        # A causal mask is only needed when several queries are computed at once; a cached step's one
        # query may see every key so far.
        is_causal = causal and q.size(2) > 1
        if is_causal and k.size(2) != q.size(2):
            raise ValueError("a causal step over several positions needs an empty cache")
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )
        return self.out_proj(y.transpose(1, 2).flatten(2))

    def _heads(self, t: Tensor) -> Tensor:
        """(B, T, d) → (B, heads, T, d / heads)."""
        return t.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)


class FeedForward(nn.Module):
    """Position-wise feed-forward network (§3.3):  FFN(x) = max(0, xW₁ + b₁)W₂ + b₂."""

    def __init__(self, d_model: int, d_ff: int, activation_dropout: float = 0.0):
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff)
        self.w2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(activation_dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(self.dropout(F.relu(self.w1(x))))


def _residual(cfg: ModelConfig, side: str, layer: int, sublayer: str) -> nn.Module:
    """The residual block around ``sublayer`` of ``layer`` on ``side``, told where it sits."""
    place = Place(side, layer, sublayer, cfg.encoder_layers, cfg.decoder_layers)
    return build_residual(cfg.skip, cfg.d_model, cfg.lam, cfg.dropout, place=place)


class EncoderLayer(nn.Module):
    """One encoder layer: self-attention, then feed-forward, each inside a residual block.

    ``state`` is what the residual blocks carry from one to the next: the hidden tensor (B, S, d), or a
    variant's several streams; every sublayer takes and returns one (B, S, d) tensor.
    """

    def __init__(self, cfg: ModelConfig, layer: int = 0):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout)
        self.ff = FeedForward(cfg.d_model, cfg.d_ff, cfg.activation_dropout)
        self.self_attn_residual = _residual(cfg, "encoder", layer, "self_attn")
        self.ff_residual = _residual(cfg, "encoder", layer, "ff")

    def forward(self, state: State, src_mask: Tensor) -> State:
        state = self.self_attn_residual(state, lambda h: self.self_attn(h, mask=src_mask))
        return self.ff_residual(state, self.ff)

    def residual_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(residual block, the sublayer it wraps), in the order they compute."""
        return [(self.self_attn_residual, self.self_attn), (self.ff_residual, self.ff)]


class DecoderLayer(nn.Module):
    """One decoder layer: masked self-attention, encoder-decoder attention, feed-forward."""

    def __init__(self, cfg: ModelConfig, layer: int = 0):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout)
        self.ff = FeedForward(cfg.d_model, cfg.d_ff, cfg.activation_dropout)
        self.self_attn_residual = _residual(cfg, "decoder", layer, "self_attn")
        self.cross_attn_residual = _residual(cfg, "decoder", layer, "cross_attn")
        self.ff_residual = _residual(cfg, "decoder", layer, "ff")

    def forward(self, state: State, memory: Tensor, src_mask: Tensor, cache: dict | None = None) -> State:
        self_cache = cross_cache = None
        if cache is not None:
            self_cache, cross_cache = cache.setdefault("self", {}), cache.setdefault("cross", {})
        state = self.self_attn_residual(state, lambda h: self.self_attn(h, causal=True, cache=self_cache))
        state = self.cross_attn_residual(state, lambda h: self.cross_attn(h, memory, mask=src_mask, cache=cross_cache))
        return self.ff_residual(state, self.ff)

    def residual_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.self_attn_residual, self.self_attn), (self.cross_attn_residual, self.cross_attn),
                (self.ff_residual, self.ff)]


class _StackEndsByName:
    """Loads checkpoints written before the stack ends had their own module: ``final_norm.*`` is ``ends.norm.*``."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key in [k for k in state_dict if k.startswith(prefix + "final_norm.")]:
            state_dict[prefix + "ends.norm." + key[len(prefix + "final_norm."):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class Encoder(_StackEndsByName, nn.Module):
    """N encoder layers between the residual variant's stack ends: embedding → state, state → output
    (identity for most variants; a final LayerNorm for pre-norm ones; see ``nmt.residual.StackEnds``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg, i) for i in range(cfg.encoder_layers))
        self.ends = build_stack_ends(cfg.skip, cfg.d_model, cfg.lam)

    def forward(self, x: Tensor, src_mask: Tensor) -> Tensor:
        state = self.ends.begin(x)
        for layer in self.layers:
            state = layer(state, src_mask)
        return self.ends.end(state)


class Decoder(_StackEndsByName, nn.Module):
    """N decoder layers between the residual variant's stack ends (see ``Encoder``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.decoder_layers))
        self.ends = build_stack_ends(cfg.skip, cfg.d_model, cfg.lam)

    def forward(self, x: Tensor, memory: Tensor, src_mask: Tensor, cache: DecoderCache | None = None) -> Tensor:
        state = self.ends.begin(x)
        for i, layer in enumerate(self.layers):
            state = layer(state, memory, src_mask, cache.layers[i] if cache is not None else None)
        return self.ends.end(state)


class DecoderCache:
    """Keys and values kept between incremental decoding steps, one dict per decoder layer.

    ``length`` is the number of target positions already decoded (the next token's position).
    ``reorder`` selects batch rows, e.g. when beam search keeps some hypotheses and drops others.
    """

    def __init__(self, n_layers: int):
        self.layers: list[dict] = [{} for _ in range(n_layers)]
        self.length = 0

    def reorder(self, index: Tensor, cross_index: Tensor | None | str = "same") -> None:
        """Row i of the cache becomes row ``index[i]``.

        ``cross_index`` selects the rows of the cross-attention keys/values (computed from the encoder output
        only): ``"same"`` (default) uses ``index``; a tensor uses those rows instead; None leaves them as they
        are. None (or the kept rows) is correct only when every new row i attends to the same encoder output as
        old row ``cross_index[i]`` — beam search's case: the k rows of a sentence hold copies of one encoder
        output, so moving hypotheses within a sentence needs no copy of those keys/values, only dropping
        finished sentences does.
        """
        for layer in self.layers:
            for name, kv in layer.items():
                rows = index if name != "cross" or isinstance(cross_index, str) else cross_index
                if rows is None:
                    continue
                for key in kv:
                    kv[key] = kv[key].index_select(0, rows)


class Transformer(nn.Module):
    """Encoder-decoder Transformer. ``forward(src, tgt_in)`` gives next-token logits (B, T, vocab)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = Embedding(cfg)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if getattr(residual_class(cfg.skip), "data_dependent_init", None) is not None:
            # True once the blocks' one-time initialisation from data has run: saved with the weights, so that a
            # resumed run (or a loaded checkpoint) never runs it again
            self.register_buffer("data_init_done", torch.tensor(False))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation of ``cfg.init``, identical for every residual variant.

        Both schemes: W^Q, W^K and W^V Xavier-uniform with gain 1/√2, i.e. U(±√(3/(2d))) (Xavier-uniform of the
        stacked (3d, d) matrix, as ``nn.MultiheadAttention`` does); W^O Xavier-uniform with bias 0; LayerNorm
        γ = 1, β = 0; token embeddings N(0, d^-½) with the padding row 0. They differ in the rest:

        - ``"xavier"``: the biases of W^Q, W^K, W^V are 0; the feed-forward weights are Xavier-uniform and
          their biases 0 (every linear layer Xavier-uniform, every bias 0).
        - ``"fairseq"`` (fairseq's ``transformer``): the biases of W^Q, W^K, W^V and the feed-forward layers keep
          PyTorch's default ``nn.Linear`` initialisation, weights and biases U(±1/√fan_in), which makes W₂ of the
          feed-forward network about half as large as under Xavier (fan_in d_ff = 4d).

        The residual blocks' own parameters are theirs to initialise (in their constructors: LayerNorm γ = 1, β = 0,
        ReZero's α = 0, …) and are left alone here; afterwards every block's ``init_sublayer`` gets the module it
        wraps, which it may re-initialise (DeepNorm scales some weights by its β).
        """
        fairseq = self.cfg.init == "fairseq"
        qkv = {id(m.in_proj) for m in self.modules() if isinstance(m, MultiHeadAttention)}
        feed_forward = {id(lin) for m in self.modules() if isinstance(m, FeedForward) for lin in (m.w1, m.w2)}
        pairs = self.residual_pairs()
        in_blocks = {id(m) for block, _ in pairs for m in block.modules()}
        for module in self.modules():
            if id(module) in in_blocks:  # a residual block initialises its own parameters
                continue
            if isinstance(module, MultiHeadAttention) and not fairseq:
                # "xavier" runs drew W^Q, W^K and W^V one by one here, then redrew the stacked matrix as any other
                # linear layer below: the first draw stays, so that they reproduce bit for bit
                for w in module.in_proj.weight.chunk(3):
                    nn.init.xavier_uniform_(w)
            elif isinstance(module, nn.Linear):
                if fairseq and id(module) in feed_forward:
                    module.reset_parameters()  # PyTorch's default: weight and bias U(±1/√fan_in)
                    continue
                nn.init.xavier_uniform_(module.weight)
                if fairseq and id(module) in qkv:
                    bound = module.in_features**-0.5
                    nn.init.uniform_(module.bias, -bound, bound)
                else:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.embed.tokens.weight, std=self.cfg.d_model**-0.5)
        with torch.no_grad():
            self.embed.tokens.weight[self.cfg.pad_id].zero_()
        for block, sublayer in pairs:  # then each block may re-initialise what it wraps (DeepNorm: scaled by β)
            init = getattr(block, "init_sublayer", None)
            if init is not None:
                init(sublayer)

    def residual_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """Every (residual block, the sublayer it wraps): the encoder's in the order they compute, then the
        decoder's."""
        return [pair for stack in (self.encoder, self.decoder)
                for layer in stack.layers for pair in layer.residual_pairs()]

    @property
    def needs_data_init(self) -> bool:
        """Whether the residual blocks declare a one-time initialisation from data that has not run yet."""
        return hasattr(self, "data_init_done") and not bool(self.data_init_done)

    def data_dependent_init(self, src: Tensor, tgt_in: Tensor) -> bool:
        """Run the residual blocks' one-time initialisation from data on the batch (src, tgt_in), if their class
        declares one (``data_dependent_init``, e.g. Admin's profiling) and it has not run yet; True if it ran.

        The batch passes through the model once, without gradient and without dropout (eval mode, so no random
        number is drawn); the result lives in the blocks' parameters, and ``data_init_done`` records that it ran.
        """
        if not self.needs_data_init:
            return False
        blocks = [block for block, _ in self.residual_pairs()]
        training = self.training
        self.eval()
        try:
            with torch.no_grad():
                type(blocks[0]).data_dependent_init(blocks, lambda: self(src, tgt_in))
        finally:
            self.train(training)
        self.data_init_done.fill_(True)
        return True

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """src (B, S) token ids → memory (B, S, d) and the key mask (B, 1, 1, S) of non-padding tokens."""
        src_mask = (src != self.cfg.pad_id)[:, None, None, :]
        return self.encoder(self.embed(src), src_mask), src_mask

    def decode(self, tgt_in: Tensor, memory: Tensor, src_mask: Tensor, cache: DecoderCache | None = None) -> Tensor:
        """tgt_in (B, T) → logits (B, T, vocab). With a cache, ``tgt_in`` continues what it holds."""
        start = cache.length if cache is not None else 0
        h = self.decoder(self.embed(tgt_in, start), memory, src_mask, cache)
        if cache is not None:
            cache.length += tgt_in.size(1)
        return F.linear(h, self.embed.tokens.weight)  # tied output projection (§3.4)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        memory, src_mask = self.encode(src)
        return self.decode(tgt_in, memory, src_mask)

    def new_cache(self) -> DecoderCache:
        return DecoderCache(len(self.decoder.layers))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def model_config(arch: str, vocab_size: int, **overrides) -> ModelConfig:
    """The ModelConfig of a named preset (``ARCHS``), with explicit overrides (None = keep)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown --arch {arch!r}; known: {', '.join(ARCHS)}")
    values = {**ARCHS[arch], **{k: v for k, v in overrides.items() if v is not None}}
    return ModelConfig(vocab_size=vocab_size, **values)
