"""A residual block without its skip, for the diagnosis tests: ``--skip plain_block:PlainLN`` is Post-LN with the
identity path removed, y = LN(F(x)), the plain deep network of Balduzzi et al. (2017) with a normalisation."""

from torch import Tensor, nn

from nmt.residual import ResidualBlock, Sublayer


class PlainLN(ResidualBlock):
    """y = LN(F(x)): no skip."""

    def __init__(self, d_model: int, lam: float = 1.0, dropout: float = 0.0, place=None):
        super().__init__(d_model, lam, dropout, place)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, sublayer: Sublayer) -> Tensor:
        return self.norm(self.dropout(sublayer(x)))
