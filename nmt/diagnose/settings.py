"""What a diagnosis measures on, and how much of it: ``DiagnosisSettings``, the flags of ``python -m nmt.diagnose``
(and the settings of the study report's "Why" section). A module of its own so that the report can name them without
importing torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class DiagnosisSettings:
    """What a diagnosis measures on, and how much of it (the flags of ``python -m nmt.diagnose``)."""

    split: str = "valid"
    limit: int = 200  # the first N sentences of the split (0: all): the lesion study translates them all
    batches: int = 4  # K: the gradient, hidden-state, shattered-gradient and similarity measurements use K batches
    max_tokens: int = 1024  # of those sentences, each of at most this many padded tokens
    scales: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)  # perturbation sizes ε of the shattered gradients
    lags: int = 8  # positions apart, for the gradients' autocorrelation along the sentence
    max_k: int = 8  # the lesion study deletes up to this many sublayers at once
    draws: int = 3  # random sets of k sublayers for each k ≥ 2
    seed: int = 1  # of the perturbations and the lesion draws

    def to_dict(self) -> dict:
        return {**asdict(self), "scales": list(self.scales)}

    @classmethod
    def from_args(cls, args) -> DiagnosisSettings:
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        if "scales" in values:
            values["scales"] = tuple(values["scales"])
        return cls(**values)
