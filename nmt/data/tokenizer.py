"""A joint SentencePiece model for source and target, trained once per corpus and cached.

One vocabulary for both languages lets the model share its embedding matrices (``nmt.model``).
Training is deterministic (fixed seed and one thread) and covers every character (character
coverage 1.0 plus byte fallback), so no decoded sentence contains ``⁇``. The model is cached under
``data/cache/spm/<key>/`` where the key hashes the training files and every setting, so a second run
on the same data reuses it instead of retraining.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import sentencepiece as spm

from nmt.data.corpus import DataError
from nmt.data.publish import publishing

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def spm_settings(vocab_size: int, model_type: str, sample_sentences: int, seed: int) -> dict:
    if model_type not in ("unigram", "bpe"):
        raise ValueError(f"--spm-type must be 'unigram' or 'bpe', got {model_type!r}")
    return dict(
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        byte_fallback=True,
        hard_vocab_limit=False,  # a small corpus may not support the size asked for: take what it has
        input_sentence_size=sample_sentences,
        shuffle_input_sentence=True,
        num_threads=1,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        seed=seed,
    )


def train_or_load(
    files: list[Path], file_hashes: list[str], cache_root: Path, settings: dict, log=print, build: bool = True
) -> Path:
    """Path of a SentencePiece model trained on ``files`` with ``settings``; trained only if not cached.

    ``build=False`` (the other processes of a node under data parallelism): wait until the node's first
    process has put the model into the cache instead of training it too (see ``nmt.launch``).
    """
    key_text = json.dumps({"files": file_hashes, "settings": settings}, sort_keys=True)
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    folder = cache_root / "spm" / key
    model = folder / "spm.model"
    if not build:
        from nmt.launch import wait_for

        wait_for(model)
    if model.is_file():
        log(f"SentencePiece: using cached {model}")
        return model
    for file in files:  # SentencePiece itself would stop with an internal error naming neither file nor cause
        if file.stat().st_size == 0:
            raise DataError(f"{file}: the file is empty; SentencePiece has no text to learn its vocabulary from")
    log(f"SentencePiece: training a {settings['model_type']} model, vocabulary {settings['vocab_size']} ...")
    with publishing(folder, complete=lambda f: (f / "spm.model").is_file()) as tmp:
        trainer_args = {k: v for k, v in settings.items() if k != "seed"}
        spm.set_random_generator_seed(settings["seed"])
        try:
            spm.SentencePieceTrainer.train(
                input=[str(f) for f in files],
                model_prefix=str(tmp / "spm"),
                minloglevel=2,
                **trainer_args,
            )
        except RuntimeError as e:
            if "smaller than required_chars" in str(e):
                raise DataError(
                    f"--vocab-size {settings['vocab_size']} is too small for {files[0].parent}: SentencePiece needs "
                    "room for every character of the corpus plus 256 byte-fallback pieces"
                ) from None
            if "sentences_.empty()" in str(e) or "all_chars_count" in str(e):
                raise DataError(
                    f"{' and '.join(map(str, files))}: every line is blank; SentencePiece has no text to learn its "
                    "vocabulary from"
                ) from None
            raise
        (tmp / "settings.json").write_text(key_text + "\n")
    return model


class Tokenizer:
    """SentencePiece encode/decode with the project's special ids (pad 0, unk 1, bos 2, eos 3)."""

    def __init__(self, model_path: Path | None = None, model_bytes: bytes | None = None):
        if (model_path is None) == (model_bytes is None):
            raise ValueError("give the SentencePiece model as a path or as bytes")
        self.path = Path(model_path) if model_path is not None else None
        if model_bytes is None:
            model_bytes = self.path.read_bytes()
        self.model_bytes = model_bytes  # kept so that checkpoints can carry their tokenizer
        self.sp = spm.SentencePieceProcessor(model_proto=model_bytes)
        self.vocab_size = self.sp.get_piece_size()

    def encode(self, lines: list[str], threads: int = 1) -> list[list[int]]:
        return self.sp.encode(lines, num_threads=threads)

    def decode(self, ids: list[list[int]]) -> list[str]:
        return self.sp.decode(ids)
