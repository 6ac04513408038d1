"""Tests for the generated toy corpus (nmt.data.synthetic).

The rendering tests pin exact English and German outputs that were worked out by hand from
German grammar; the corpus tests check determinism, split hygiene and the statistics the
module promises (vocabulary size, sentence lengths, a hard-enough task)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sacrebleu

import nmt
from nmt.data.synthetic import (
    DEFAULT_SEED,
    DEFAULT_SIZES,
    DESCRIPTION,
    NP,
    SPLITS,
    Clause,
    Sentence,
    generate_pairs,
    render,
    write_corpus,
)

FILES = [f"{split}.{lang}" for split in SPLITS for lang in ("en", "de")]


def pron(head: str) -> NP:
    return NP(head, "pron")


def name(head: str) -> NP:
    return NP(head, "name")


# --- exact renderings, references computed by hand -------------------------------------------------
CASES = [
    # dative recipient before accusative object; weak adjective after der, mixed after ein
    (Sentence(Clause(NP("man", adj="old"), "give", obj=NP("book", det="a", adj="red"),
                     recipient=NP("child", adj="small"))),
     "The old man gives a red book to the small child.", "Der alte Mann gibt dem kleinen Kind ein rotes Buch."),
    # mixed endings -er (nom m) and -en (acc m); weak masculine noun Bär -> Bären
    (Sentence(Clause(NP("dog", det="a", adj="big"), "see", obj=NP("bear", det="a", adj="brown"))),
     "A big dog sees a brown bear.", "Ein großer Hund sieht einen braunen Bären."),
    # adjective stem ending in -e (müde), mixed neuter -es, an before a vowel
    (Sentence(Clause(NP("dog", adj="tired"), "find", obj=NP("egg", det="a", adj="old"))),
     "The tired dog finds an old egg.", "Der müde Hund findet ein altes Ei."),
    # dative verb, dative after "in" with contraction, weak noun Junge -> Jungen
    (Sentence(Clause(NP("woman"), "help", obj=NP("boy"), pp=("in", NP("kitchen")))),
     "The woman helps the boy in the kitchen.", "Die Frau hilft dem Jungen in der Küche."),
    # "into" takes the accusative: in das -> ins
    (Sentence(Clause(NP("child", plural=True), "go", pp=("into", NP("house")))),
     "The children go into the house.", "Die Kinder gehen ins Haus."),
    # für + accusative with a possessive, strong plural endings, dative plural -n
    (Sentence(Clause(NP("child", det="", adj="small", plural=True), "buy", obj=NP("milk", det="", adj="warm"),
                     pp=("for", NP("sister", det="my")))),
     "Small children buy warm milk for my sister.", "Kleine Kinder kaufen warme Milch für meine Schwester."),
    (Sentence(Clause(pron("she"), "dance", pp=("with", NP("child", det="", adj="small", plural=True)))),
     "She dances with small children.", "Sie tanzt mit kleinen Kindern."),
    # verb second after a fronted adverbial
    (Sentence(Clause(NP("man"), "see", obj=NP("dog"), adv="today"), front=True),
     "Today the man sees the dog.", "Heute sieht der Mann den Hund."),
    (Sentence(Clause(NP("dog"), "lose", obj=NP("ball"), tense="perfect", adv="unfortunately"), front=True),
     "Unfortunately, the dog has lost the ball.", "Leider hat der Hund den Ball verloren."),
    # verb-final subordinate clause
    (Sentence(Clause(name("Tom"), "be", adj="happy"), Clause(NP("woman"), "read", obj=NP("book")), "because"),
     "Tom is happy, because the woman reads the book.", "Tom ist glücklich, weil die Frau das Buch liest."),
    # fronted subordinate clause: the main clause starts with its verb
    (Sentence(Clause(NP("dog"), "play"), Clause(NP("man"), "sleep"), "when", sub_first=True),
     "When the man sleeps, the dog plays.", "Wenn der Mann schläft, spielt der Hund."),
    # perfect tense: haben/sein and the participle at the end (before the finite verb in a subordinate clause)
    (Sentence(Clause(pron("she"), "see", obj=NP("dog"), tense="perfect", pp=("in", NP("park")))),
     "She has seen the dog in the park.", "Sie hat den Hund im Park gesehen."),
    (Sentence(Clause(pron("we"), "go", pp=("to", NP("school")), tense="perfect")),
     "We have gone to the school.", "Wir sind zur Schule gegangen."),
    (Sentence(Clause(pron("I"), "think"), Clause(pron("they"), "find", obj=NP("key"), tense="perfect", neg=True),
              "that"),
     "I think that they have not found the key.", "Ich denke, dass sie den Schlüssel nicht gefunden haben."),
    # modals with the infinitive at the end; "must not" is "darf nicht"
    (Sentence(Clause(pron("I"), "see", obj=NP("dog"), tense="can")),
     "I can see the dog.", "Ich kann den Hund sehen."),
    (Sentence(Clause(pron("you"), "eat", obj=NP("cake", det="this"), tense="must", neg=True)),
     "You must not eat this cake.", "Du darfst diesen Kuchen nicht essen."),
    (Sentence(Clause(NP("man", plural=True), "visit", obj=pron("he"), tense="want", neg=True)),
     "The men do not want to visit him.", "Die Männer wollen ihn nicht besuchen."),
    # negation: nicht after a definite object, kein for an indefinite or bare one
    (Sentence(Clause(NP("man"), "see", obj=NP("dog"), neg=True)),
     "The man does not see the dog.", "Der Mann sieht den Hund nicht."),
    (Sentence(Clause(NP("man"), "see", obj=NP("dog", det="a"), neg=True)),
     "The man does not see a dog.", "Der Mann sieht keinen Hund."),
    (Sentence(Clause(pron("you all"), "drink", obj=NP("milk", det=""), neg=True)),
     "You all do not drink milk.", "Ihr trinkt keine Milch."),
    (Sentence(Clause(name("Anna"), "know", neg=True), Clause(NP("dog"), "sleep"), "whether"),
     "Anna does not know whether the dog sleeps.", "Anna weiß nicht, ob der Hund schläft."),
    # questions: verb first
    (Sentence(Clause(NP("man"), "see", obj=NP("dog")), question=True),
     "Does the man see the dog?", "Sieht der Mann den Hund?"),
    (Sentence(Clause(pron("you all"), "help", obj=pron("she"), tense="perfect"), question=True),
     "Have you all helped her?", "Habt ihr ihr geholfen?"),
    # frequency adverbs: after pronoun objects, before noun objects
    (Sentence(Clause(pron("he"), "visit", obj=pron("she"), mid="often")),
     "He often visits her.", "Er besucht sie oft."),
    (Sentence(Clause(pron("he"), "visit", obj=NP("doctor"), mid="often", tense="perfect")),
     "He has often visited the doctor.", "Er hat oft den Arzt besucht."),
    # coordinated names agree in the plural; "but" main clauses keep verb second
    (Sentence(Clause(NP("Tom and Anna", "names"), "sleep", adv="at night"), Clause(NP("cat"), "be", adj="hungry"),
              "but"),
     "Tom and Anna sleep at night, but the cat is hungry.",
     "Tom und Anna schlafen in der Nacht, aber die Katze ist hungrig."),
]


@pytest.mark.parametrize("sentence,english,german", CASES, ids=[c[1] for c in CASES])
def test_rendering(sentence: Sentence, english: str, german: str) -> None:
    assert render(sentence) == (english, german)


# --- generated corpus ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int], float]:
    out = tmp_path_factory.mktemp("synthetic") / "corpus"
    start = time.perf_counter()
    counts = write_corpus(out)
    return out, counts, time.perf_counter() - start


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def test_files_sizes_and_format(corpus: tuple[Path, dict[str, int], float]) -> None:
    out, counts, seconds = corpus
    assert counts == DEFAULT_SIZES and counts["train"] >= 10000
    assert seconds < 6.0  # about 1 s on a laptop; the promise is "well under 3 s"
    assert (out / "README.md").read_text(encoding="utf-8") == DESCRIPTION.format(seed=DEFAULT_SEED, **counts)
    for split in SPLITS:
        sides = []
        for lang in ("en", "de"):
            raw = (out / f"{split}.{lang}").read_bytes()
            text = raw.decode("utf-8")
            assert text.endswith("\n")
            assert not any(ch in text for ch in ("\r", "\x85", "\u2028", "\u2029"))
            lines = text.split("\n")[:-1]
            assert len(lines) == counts[split]
            assert all(line.strip() == line and line for line in lines)
            assert all(line[0].isupper() and line[-1] in ".?" for line in lines)
            sides.append(lines)
        lengths = [len(line.split()) for line in sides[0]]
        assert min(lengths) >= 4 and max(lengths) <= 25
        assert 8 <= sum(lengths) / len(lengths) <= 14


def test_splits_are_disjoint_and_mapping_is_a_function(corpus: tuple[Path, dict[str, int], float]) -> None:
    out, _, _ = corpus
    en = {split: read_lines(out / f"{split}.en") for split in SPLITS}
    de = {split: read_lines(out / f"{split}.de") for split in SPLITS}
    for split in SPLITS:
        assert len(set(en[split])) == len(en[split])
    assert not set(en["train"]) & set(en["valid"])
    assert not set(en["train"]) & set(en["test"])
    assert not set(en["valid"]) & set(en["test"])
    mapping: dict[str, set[str]] = {}
    for split in SPLITS:
        for source, target in zip(en[split], de[split]):
            mapping.setdefault(source, set()).add(target)
    assert all(len(targets) == 1 for targets in mapping.values())


def test_same_english_same_german_across_seeds() -> None:
    seen: dict[str, str] = {}
    for seed in range(4):
        for en, de in generate_pairs(3000, seed):
            assert seen.setdefault(en, de) == de


def test_vocabulary_and_difficulty(corpus: tuple[Path, dict[str, int], float]) -> None:
    out, _, _ = corpus
    for lang in ("en", "de"):
        text = (out / f"train.{lang}").read_text(encoding="utf-8").lower()
        assert len(set(re.findall(r"\w+", text))) >= 300
    # Copying the source must be a bad translation: a model has to learn the mapping.
    src = read_lines(out / "test.en") + read_lines(out / "valid.en")
    ref = read_lines(out / "test.de") + read_lines(out / "valid.de")
    assert sacrebleu.corpus_bleu(src, [ref]).score < 10


def test_deterministic_in_process_and_across_hash_seeds(corpus: tuple[Path, dict[str, int], float],
                                                        tmp_path: Path) -> None:
    out, _, _ = corpus
    again = tmp_path / "again"
    assert write_corpus(again, seed=DEFAULT_SEED) == DEFAULT_SIZES
    other = tmp_path / "subprocess"
    root = str(Path(nmt.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONHASHSEED": "987", "PYTHONPATH": os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    code = "import sys; from nmt.data.synthetic import write_corpus; write_corpus(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(other)], check=True, env=env)
    for name in [*FILES, "README.md"]:
        reference = (out / name).read_bytes()
        assert (again / name).read_bytes() == reference, name
        assert (other / name).read_bytes() == reference, name


def test_stream_prefix_and_stable_test_split(tmp_path: Path) -> None:
    assert generate_pairs(50, seed=7) == generate_pairs(200, seed=7)[:50]
    assert generate_pairs(50, seed=7) != generate_pairs(50, seed=8)
    small = write_corpus(tmp_path / "small", sizes={"train": 100, "valid": 20, "test": 30})
    big = write_corpus(tmp_path / "big", sizes={"train": 300, "valid": 20, "test": 30})
    assert small == {"train": 100, "valid": 20, "test": 30} and big["train"] == 300
    for name in ("test.en", "test.de", "valid.en", "valid.de"):
        assert (tmp_path / "small" / name).read_bytes() == (tmp_path / "big" / name).read_bytes()


def test_existing_corpus_is_kept_and_no_temporary_left(tmp_path: Path) -> None:
    sizes = {"train": 40, "valid": 5, "test": 5}
    out = tmp_path / "corpus"
    assert write_corpus(out, sizes=sizes) == sizes
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert write_corpus(out, sizes=sizes) == sizes  # complete: left alone
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # the temporary sibling was renamed
    with pytest.raises(FileExistsError):
        write_corpus(out, seed=DEFAULT_SEED + 1, sizes=sizes)
    (out / "train.de").unlink()  # an incomplete corpus is not mistaken for a complete one
    with pytest.raises(FileExistsError):
        write_corpus(out, sizes=sizes)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_corpus(empty, sizes=sizes) == sizes
    with pytest.raises(ValueError):
        write_corpus(tmp_path / "bad", sizes={"train": 10})
