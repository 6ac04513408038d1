#!/usr/bin/env bash
# fairseq's training speed on the same data, SentencePiece model and model size as `python -m nmt.bench`.
#
#   benchmarks/fairseq_reference.sh [UPDATES]          # default 60 updates; the issue's BLEU run is 800
#
# Needs fairseq in its own venv (fairseq 0.12.2 does not import on Python 3.11; the `fairseq-fixed` fork does):
#   python3 -m venv /work/fairseq-venv && /work/fairseq-venv/bin/pip install torch==2.13.0 \
#     && /work/fairseq-venv/bin/pip install fairseq-fixed==0.12.3.1
# Environment (defaults in brackets): NMT_PYTHON [python of the project's venv: /work/venv/bin/python],
# FAIRSEQ_VENV [/work/fairseq-venv], DATA [../shared/data/multi30k-en-de], VOCAB [8000], MAX_TOKENS [4096],
# LAYERS [3], WORK [/tmp/fairseq-bench], THREADS [all cores], SEED [1], BLEU [0], SUBSETS [test] (with BLEU=1: the
# splits to translate, e.g. "valid test").
#
# 1. Encodes every split to SentencePiece pieces with the SAME model nmt.bench / train.py train on DATA
#    (joint unigram, VOCAB, from the project's cache), and writes its vocabulary as fairseq's dictionary.
# 2. fairseq-preprocess (joined dictionary), then fairseq-train --arch transformer sized like ours: d 256,
#    ff 1024, 4 heads, LAYERS+LAYERS, shared embeddings, dropout 0.1, label-smoothed CE 0.1, Adam (0.9, 0.98)
#    ε 1e-9, inverse-sqrt schedule, --max-tokens MAX_TOKENS, on CPU, no validation, no checkpoints.
# 3. Prints fairseq's wps (its "words per second" counts non-padding target tokens, EOS included: the
#    same unit as nmt.bench's target tokens/s) averaged over the logged intervals after the first.
# 4. With BLEU=1 (the issue's reference: 800 updates, then beam 5): keeps the last checkpoint, translates the test
#    split with fairseq-generate (beam 5, length penalty 1, fairseq's defaults), decodes the pieces with the same
#    SentencePiece model and prints sacreBLEU (13a, detokenized) against the raw references, as evaluate.py does.
# Compare with:  python -m nmt.bench --arch small --layers $LAYERS --data $DATA --max-tokens $MAX_TOKENS --only train
set -euo pipefail
UPDATES=${1:-60}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NMT_PYTHON=${NMT_PYTHON:-/work/venv/bin/python}
FAIRSEQ_VENV=${FAIRSEQ_VENV:-/work/fairseq-venv}
DATA=$(cd "${DATA:-$ROOT/../shared/data/multi30k-en-de}" && pwd)
VOCAB=${VOCAB:-8000}
MAX_TOKENS=${MAX_TOKENS:-4096}
LAYERS=${LAYERS:-3}
WORK=${WORK:-/tmp/fairseq-bench}
THREADS=${THREADS:-$(nproc)}
BLEU=${BLEU:-0}
SEED=${SEED:-1}
SUBSETS=${SUBSETS:-test}
SAVE=(--no-save)
if [ "$BLEU" = 1 ]; then SAVE=(--no-epoch-checkpoints); fi
export TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 OMP_NUM_THREADS=$THREADS
mkdir -p "$WORK/spm" "$WORK/bin"

# 1. SentencePiece pieces and dictionary, from the project's tokenizer
(cd "$ROOT" && "$NMT_PYTHON" - "$DATA" "$VOCAB" "$WORK" <<'EOF'
import sys
from pathlib import Path

from nmt.bench import load_tokenizer
from nmt.data.catalog import resolve_corpus
from nmt.data.corpus import read_lines

data, vocab, work = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
corpus = resolve_corpus(data, None, None)
tok = load_tokenizer(corpus, vocab)
for split in ("train", "valid", "test"):
    for lang in (corpus.src, corpus.tgt):
        pieces = tok.sp.encode(read_lines(corpus.file(split, lang)), out_type=str)
        (work / "spm" / f"{split}.{lang}").write_text("".join(" ".join(p) + "\n" for p in pieces), encoding="utf-8")
# fairseq adds its own <s> <pad> </s> <unk>: list every other piece once
specials = {tok.sp.pad_id(), tok.sp.bos_id(), tok.sp.eos_id(), tok.sp.unk_id()}
lines = [f"{tok.sp.id_to_piece(i)} 1\n" for i in range(tok.vocab_size) if i not in specials]
(work / "dict.txt").write_text("".join(lines), encoding="utf-8")
(work / "langs").write_text(f"{corpus.src} {corpus.tgt}\n")
print(f"{corpus.path}: {corpus.src}→{corpus.tgt}, SentencePiece vocabulary {tok.vocab_size}")
EOF
)
read -r SRC TGT < "$WORK/langs"
rm -rf "$WORK/checkpoints"

# 2. binarize and train
rm -rf "$WORK/bin" && "$FAIRSEQ_VENV/bin/fairseq-preprocess" --source-lang "$SRC" --target-lang "$TGT" \
  --trainpref "$WORK/spm/train" --validpref "$WORK/spm/valid" --testpref "$WORK/spm/test" \
  --destdir "$WORK/bin" --srcdict "$WORK/dict.txt" --joined-dictionary --workers "$THREADS" > "$WORK/preprocess.log"
"$FAIRSEQ_VENV/bin/fairseq-train" "$WORK/bin" --cpu --seed "$SEED" --num-workers 0 \
  --arch transformer --share-all-embeddings --encoder-layers "$LAYERS" --decoder-layers "$LAYERS" \
  --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 \
  --encoder-attention-heads 4 --decoder-attention-heads 4 --dropout 0.1 \
  --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
  --optimizer adam --adam-betas '(0.9, 0.98)' --adam-eps 1e-9 --lr 2e-3 --lr-scheduler inverse_sqrt --warmup-updates 200 \
  --max-tokens "$MAX_TOKENS" --max-update "$UPDATES" --disable-validation "${SAVE[@]}" --save-dir "$WORK/checkpoints" \
  --log-format simple --log-interval 10 2>&1 | tee "$WORK/train.log"

# 3. words (= non-padding target tokens) per second
python3 - "$WORK/train.log" "$THREADS" <<'EOF'
import re
import sys

# train_inner lines carry the progress "epoch 001:  10 / 227"; the epoch summaries do not
wps = [float(m.group(1)) for line in open(sys.argv[1]) if re.search(r"\d+ / \d+", line)
       for m in [re.search(r"\bwps=([0-9.]+)", line)] if m]
inner = wps[1:] if len(wps) > 1 else wps  # the first interval includes start-up
if inner:
    print(f"fairseq: {sum(inner) / len(inner):,.0f} non-padding target tokens/s (mean wps of {len(inner)} logged "
          f"intervals after the first; {sys.argv[2]} threads)")
else:
    print("fairseq: no wps in the log (too few updates for --log-interval 10?)")
EOF

# 4. BLEU of the last checkpoint (BLEU=1)
if [ "$BLEU" != 1 ]; then exit 0; fi
for SUBSET in $SUBSETS; do
"$FAIRSEQ_VENV/bin/fairseq-generate" "$WORK/bin" --cpu --path "$WORK/checkpoints/checkpoint_last.pt" \
  --gen-subset "$SUBSET" --beam 5 --lenpen 1 --batch-size 128 --num-workers 0 > "$WORK/generate-$SUBSET.log"
(cd "$ROOT" && "$NMT_PYTHON" - "$DATA" "$VOCAB" "$WORK" "$SUBSET" <<'EOF'
import sys
from pathlib import Path

import sacrebleu

from nmt.bench import load_tokenizer
from nmt.data.catalog import resolve_corpus
from nmt.data.corpus import read_lines

data, vocab, work, subset = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
corpus = resolve_corpus(data, None, None)
tok = load_tokenizer(corpus, vocab)
hyps = {}
for line in (work / f"generate-{subset}.log").read_text(encoding="utf-8").splitlines():
    if line.startswith("H-"):  # H-<id> <score> <pieces>
        head, _, pieces = line.split("\t")
        hyps[int(head[2:])] = tok.sp.decode_pieces(pieces.split())
refs = read_lines(corpus.file(subset, corpus.tgt))
if len(hyps) != len(refs):
    sys.exit(f"fairseq-generate translated {len(hyps)} of {len(refs)} {subset} sentences (see {work}/generate-{subset}.log)")
output = [hyps[i] for i in range(len(refs))]
(work / f"{subset}.hyp").write_text("".join(h + "\n" for h in output), encoding="utf-8")
metric = sacrebleu.BLEU()
bleu = metric.corpus_score(output, [refs])
print(f"fairseq {subset} BLEU {bleu.score:.2f} (beam 5, lenpen 1; {bleu}; {metric.get_signature()}); hypotheses in "
      f"{work}/{subset}.hyp")
EOF
)
done
