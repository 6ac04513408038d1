"""How a test set is scored: the ``Protocol`` every corpus carries, and the one a folder of one's own gets.

A BLEU number can be compared with another only when both were computed the same way: on the same test
set, and either on detokenized text with sacreBLEU's 13a tokenization or on the corpus's own tokens for
a corpus that is distributed tokenized. Each benchmark's literature uses one such protocol; the named
datasets (``nmt.data.catalog``) carry theirs, and training (validation and test BLEU) and ``evaluate.py``
(the extra metrics of its literature) score a corpus with its protocol.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

EXTRA_METRICS = {
    "compound_split_bleu": "tokenized BLEU with compound splitting (Vaswani et al. 2017)",
    "tokenized_bleu": "BLEU on the references' own whitespace tokens (multi-bleu.perl style)",
}
"""The extra scores a protocol may ask for (computed by ``nmt.metrics`` functions of the same name)."""

ONLY_INTO = {"compound_split_bleu": "de"}
"""Extra scores that exist for one target language only (Moses German tokenization, hyphen splitting)."""

BLEU_TOKENIZE = {
    "13a": "sacreBLEU 13a on detokenized text",
    "none": "BLEU on the corpus's own whitespace tokens, no further tokenization",
}


@dataclass(frozen=True)
class Protocol:
    """How a dataset's test set is scored.

    ``bleu_tokenize`` is the tokenization of the BLEU the protocol reports: ``"13a"`` (sacreBLEU on
    detokenized text) or ``"none"`` (whitespace tokens as distributed, for corpora distributed
    tokenized). Training's validation and test BLEU use it. ``extra`` names scores that ``evaluate.py``
    reports beside sacreBLEU 13a and chrF++ (keys of ``EXTRA_METRICS``); with ``"none"`` it must include
    ``"tokenized_bleu"``, the protocol's own number.
    """

    test_set: str = "the corpus's test split"
    bleu_tokenize: str = "13a"
    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.bleu_tokenize not in BLEU_TOKENIZE:
            raise ValueError(f"bleu_tokenize must be one of {', '.join(BLEU_TOKENIZE)}, got {self.bleu_tokenize!r}")
        unknown = [m for m in self.extra if m not in EXTRA_METRICS]
        if unknown:
            raise ValueError(f"unknown extra metric {unknown[0]!r} (known: {', '.join(EXTRA_METRICS)})")
        if self.bleu_tokenize == "none" and "tokenized_bleu" not in self.extra:
            raise ValueError("bleu_tokenize 'none' needs 'tokenized_bleu' among the extra metrics")

    def for_target(self, tgt: str) -> Protocol:
        """This protocol without the extra scores that do not exist for target language ``tgt``."""
        extra = tuple(m for m in self.extra if ONLY_INTO.get(m, tgt) == tgt)
        return self if extra == self.extra else Protocol(self.test_set, self.bleu_tokenize, extra)

    def key(self) -> str:
        """What two scores must share to be comparable, besides the test references and the decoding."""
        return "|".join(["tokenized" if self.bleu_tokenize == "none" else f"tok:{self.bleu_tokenize}", *self.extra])

    def description(self) -> str:
        text = f"{self.test_set}; BLEU: {BLEU_TOKENIZE[self.bleu_tokenize]}"
        others = [EXTRA_METRICS[m] for m in self.extra if not (m == "tokenized_bleu" and self.bleu_tokenize == "none")]
        return text + "".join(f"; also {m}" for m in others)

    def to_dict(self) -> dict:
        return {**asdict(self), "extra": list(self.extra), "description": self.description()}


def default_protocol(tgt: str) -> Protocol:
    """The protocol of a folder that is no named dataset: sacreBLEU 13a (and compound-split BLEU into German)."""
    return Protocol(extra=("compound_split_bleu",)).for_target(tgt)
