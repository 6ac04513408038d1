"""evaluate.py on two small trained runs of different variants: the table, its files, and what it refuses."""

import json
import random
import shutil

import pytest

from nmt.evaluate import main
from nmt.metrics import paired_bootstrap


@pytest.fixture(scope="module")
def table(toy_runs, tmp_path_factory):
    runs, base = toy_runs
    out = tmp_path_factory.mktemp("eval")
    code = main([str(runs["rskip_ln"][0]), str(runs["post_ln"][0]), "--limit", "300", "--beam", "2",
                 "--bootstrap", "200", "--out", str(out)])
    assert code == 0
    return json.loads((out / "results.json").read_text()), out, runs


def test_one_table_with_post_ln_first(table):
    results, out, _ = table
    assert len(results["tables"]) == 1 and results["skipped"] == []
    rows = results["tables"][0]["rows"]
    assert [(r["variant"], r["lambda"]) for r in rows] == [("post_ln", 1.0), ("rskip_ln", 2.0)]
    for r in rows:
        assert r["bleu_mean"] > 1.0 and r["chrf_mean"] > 10 and r["seeds"] == 1 and r["diverged"] == 0
        assert r["updates"] == 500 and r["tokens_seen"] > 0 and r["parameters"] > 0 and r["skipped_updates"] == 0
        assert r["compound_split_bleu"] > 0  # English→German: the literature's tokenized BLEU too
    assert rows[0]["delta_bleu"] is None
    assert rows[1]["delta_bleu"] == pytest.approx(rows[1]["bleu_mean"] - rows[0]["bleu_mean"], abs=1e-6)
    assert rows[1]["paired_seeds"] == 1


def test_p_value_is_the_paired_bootstrap_of_the_written_outputs(table):
    """p is the one-sided paired bootstrap of rskip_ln against post_ln on the hypotheses written and the
    references, with the table's resamples and the seed's own bootstrap seed (not post_ln against itself, not
    the other direction, which gives about 1 − p)."""
    results, out, runs = table
    refs = (runs["rskip_ln"][0].parent / "data" / "toy-en-de" / "test.de").read_text().split("\n")[:300]
    hyps = {name: (out / f"{name}.test.hyp").read_text().split("\n")[:300] for name in ("post_ln", "rskip_ln")}
    seed = next(r["seed"] for r in results["tables"][0]["runs"] if r["skip"] == "rskip_ln")
    expected = paired_bootstrap(hyps["post_ln"], hyps["rskip_ln"], refs, n=200, seed=seed)
    row = results["tables"][0]["rows"][1]
    assert row["p_value_max"] == expected["p_value"] and row["delta_bleu"] == pytest.approx(expected["delta"])


def test_files_and_signatures(table):
    results, out, runs = table
    md = (out / "results.md").read_text()
    assert "| post_ln | 1 |" in md and "| rskip_ln | 2 |" in md and "nrefs:1|case:mixed" in md and "first300" in md
    assert (out / "results.csv").read_text().count("\n") == 3
    hyp = (out / "rskip_ln.test.hyp").read_text().split("\n")
    assert len(hyp) == 301
    assert results["tables"][0]["chrf_signature"].startswith("nrefs:1")


def test_incomparable_runs_get_separate_tables_and_broken_runs_are_skipped(toy_runs, tmp_path, capsys):
    runs, _ = toy_runs
    other = tmp_path / "other_spm"
    shutil.copytree(runs["post_ln"][0], other)
    prov = json.loads((other / "provenance.json").read_text())
    prov["spm_model_sha256"] = "f" * 64  # as if trained with another SentencePiece model
    (other / "provenance.json").write_text(json.dumps(prov))
    broken = tmp_path / "broken"
    shutil.copytree(runs["post_ln"][0], broken)
    best = broken / "checkpoints" / "best.ckpt"
    best.write_bytes(best.read_bytes()[:1000])
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    code = main([str(runs["post_ln"][0]), str(other), str(broken), str(empty), "--limit", "50", "--beam", "1",
                 "--bootstrap", "50", "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["tables"]) == 2  # never mixed
    assert {s["run"] for s in results["skipped"]} == {str(broken), str(empty)}
    assert "not comparable" in capsys.readouterr().err


def test_average_of_last_checkpoints(toy_runs, tmp_path):
    runs, _ = toy_runs
    out = tmp_path / "avg"
    assert main([str(runs["post_ln"][0]), "--average-last", "2", "--limit", "50", "--beam", "1",
                 "--out", str(out)]) == 0
    run = json.loads((out / "results.json").read_text())["tables"][0]["runs"][0]
    assert run["checkpoint"] == "average of step-400.ckpt, step-500.ckpt"


def test_tokenized_protocol(toy_runs, tmp_path):
    """--tokenized scores whitespace tokens as they are (multi-bleu style) and is its own comparable set."""
    runs, _ = toy_runs
    out = tmp_path / "tok"
    assert main([str(runs["post_ln"][0]), "--tokenized", "--limit", "50", "--beam", "1", "--out", str(out)]) == 0
    table = json.loads((out / "results.json").read_text())["tables"][0]
    assert "|tokenized" in table["comparable"]
    run = table["runs"][0]
    assert "tok:none" in run["extra"]["tokenized_bleu"]["signature"] and "compound_split_bleu" not in run["extra"]


def test_nothing_to_evaluate(tmp_path, capsys):
    assert main([str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no run could be evaluated" in capsys.readouterr().err


def test_skipped_updates_and_divergence_are_reported_per_variant():
    from nmt.evaluate import RunScore, bleu_table_markdown, build_table

    def score(seed, skipped, diverged=False):
        return RunScore(run=f"r{seed}", skip="xskip", lam=2.0, seed=seed, arch="tiny", parameters=1, updates=10,
                        tokens_seen=5, wall_time_s=None, diverged=diverged, checkpoint="best.ckpt", bleu=10.0 + seed,
                        bleu_signature="", chrf=1.0, chrf_signature="", skipped_updates=skipped,
                        hypotheses=["a"], references=["a"])

    rows = build_table([score(1, 0), score(2, 4), score(3, 7, diverged=True)], bootstrap=10)
    assert rows[0]["skipped_updates"] == 11 and rows[0]["diverged"] == 1 and rows[0]["seeds"] == 3
    assert rows[0]["bleu_mean"] == pytest.approx(11.5)  # the diverged seed is counted, not averaged
    assert "| skipped updates |" in bleu_table_markdown(rows, "t") and "| 1 | 11 |" in bleu_table_markdown(rows, "t")


def test_p_value_against_post_ln_has_known_answers():
    """Outputs whose answer is known: a variant whose output is post_ln's has Δ 0 and p 1; one whose output is the
    references beats post_ln in every resample, so p is the smallest the bootstrap gives, 1/(n+1)."""
    from nmt.evaluate import RunScore, build_table
    from nmt.metrics import sacrebleu_score

    rng = random.Random(0)
    words = [f"w{i}" for i in range(200)]
    refs = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(100)]
    garbled = [" ".join(w if rng.random() > 0.5 else rng.choice(words) for w in line.split()) for line in refs]

    def score(skip, lam, hyps):
        return RunScore(run=skip, skip=skip, lam=lam, seed=1, arch="tiny", parameters=1, updates=10, tokens_seen=5,
                        wall_time_s=None, diverged=False, checkpoint="best.ckpt",
                        bleu=sacrebleu_score(hyps, refs)["score"], bleu_signature="", chrf=1.0, chrf_signature="",
                        hypotheses=hyps, references=refs)

    rows = build_table([score("post_ln", 1.0, garbled), score("pre_ln", 1.0, list(garbled)),
                        score("rskip_ln", 2.0, refs)], bootstrap=100)
    by_variant = {r["variant"]: r for r in rows}
    assert by_variant["pre_ln"]["delta_bleu"] == 0 and by_variant["pre_ln"]["p_value_max"] == 1.0
    assert by_variant["rskip_ln"]["delta_bleu"] == pytest.approx(100 - sacrebleu_score(garbled, refs)["score"])
    assert by_variant["rskip_ln"]["p_value_max"] == pytest.approx(1 / 101)
