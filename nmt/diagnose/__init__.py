"""Why a residual design works: the measurements of the literature on skip connections, on any model of the project.

``python -m nmt.diagnose RUN_OR_CKPT`` (``nmt.diagnose.cli``) measures a trained checkpoint of any residual variant,
or with ``--init`` the model its run starts from, and writes figures, ``diagnosis.json`` (every number) and
``summary.md``. The study report (``nmt.report``) runs it on each variant's best checkpoint ("Why" section).

Every measurement runs the model in evaluation mode (no dropout), on the first ``--limit`` sentences of a split
(``valid`` by default); the first four use the first K batches of them (``--batches``, ``--max-tokens``). L is the
training loss: label-smoothed cross-entropy per target token, teacher-forced. Nothing here knows a variant by
name: the hooks go through the residual interface every block shares (``nmt.diagnose.probes``).

1. **Gradient flow** (He et al. 2016; Liu et al. 2020). For each batch, ‖∇_θ L‖₂ over the parameters θ of each
   encoder and decoder layer (its attention, feed-forward and residual blocks' own parameters: the quantity train.py
   logs with ``--log-layer-grads``), averaged over the K batches. A run's metrics.csv with ``grad_norm/encoder.I``
   columns adds those logged norms as a heat map, layers × updates.
2. **Hidden-state growth** (Xiong et al. 2020; Kim et al. 2025). After every sublayer's residual block, the RMS
   √(mean h²) of each stream h of its output state, over the channels and the non-padding positions of the K
   batches; plus the stack's input (the embedding output) and output. One stream for most variants; a tuple state
   (ResiDual, B2T) or a tensor with a stream axis (Hyper-Connections) gives one RMS per stream.
3. **Shattered gradients** (Balduzzi et al. 2017, carried over to a Transformer). Let x be the source embedding output
   (token embedding·√d + positions: the encoder's input) of a batch and g(x) = ∂L/∂x, the decoder's input held fixed.
   With r the RMS of x over its real positions and ξ ~ N(0, I) on those positions (seeded, ``--seed``):

   - **correlation against the perturbation**: for ε in ``--scales``, ρ(ε) = the Pearson correlation between the
     entries of g(x) and of g(x + ε·r·ξ) over one sentence's real positions and all channels, averaged over the
     sentences. Near 1 for small ε: the gradient is a smooth function of the input; falling to 0 already at small ε:
     shattered, like white noise (in a deep plain network it decays like 2^-depth, with skips like 1/√depth);
   - **autocorrelation along the sentence**: for k = 1…``--lags``, A(k) = the Pearson correlation between the entries
     of g(x) at positions t and t + k (every t with both real, all channels) of one sentence, averaged over the
     sentences longer than k. It counts what the gradients at tokens k apart share, including a direction common to
     all positions; near 0 means the gradient changes from token to token like noise.
4. **Lesion study** (Veit et al. 2016). A sublayer is deleted by making it return zeros of its input's shape: its
   residual branch F(x) = 0, the rest of its block (normalisations, gates, other streams) unchanged, so Post-LN's
   block computes LN(x) and Pre-LN's x. Greedy BLEU (sacreBLEU, 13a) of the ``--limit`` sentences with nothing
   deleted, with each sublayer deleted alone, and with k = 2…``--max-k`` random sublayers (uniform, distinct,
   ``--draws`` sets per k) deleted at once; BLEU against k (k = 1: every single lesion). A model that behaves like
   an ensemble of shallow paths degrades smoothly with k.
5. **Representation similarity** (Kornblith et al. 2019; Zhu et al. 2025). Linear CKA between every pair of the
   representations "embedding", "layer 1" … "layer N" of each stack, each an n × d matrix of the non-padding
   positions of the K batches, a layer's representation being its output state as the stack would end there (the
   variant's stack end applied: e.g. Pre-LN's final LayerNorm, ResiDual's x_a + LN(x_d)):
   CKA(X, Y) = ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F), columns centred. 1: the same representation up to a rotation and
   a scale; neighbouring layers near 1, they have collapsed onto each other.

The modules: ``probes`` (hooks on the residual blocks: states, lesions), ``measures`` (the five measurements),
``subject`` (the model and sentences to diagnose), ``diagnosis`` (all of it for one model, its files, the report's
cache), ``figures`` (matplotlib), ``cli`` (the command). This package imports none of them, so that importing one
(the report's ``figures.grid``) does not import torch.
"""
