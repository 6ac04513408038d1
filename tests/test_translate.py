"""python -m nmt.translate on a trained run: stdin to stdout, files, blank lines, bad checkpoints."""

import io
import shutil

import pytest
import torch

from nmt.checkpoint import CheckpointError, find_checkpoint
from nmt.translate import Translator, main


def test_translates_stdin_to_stdout_in_order(toy_run, monkeypatch, capsys):
    run_dir = toy_run[0]
    lines = ["The man sees the dog.", "", "   ", "The woman reads a book today."]
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(line + "\n" for line in lines)))
    assert main([str(run_dir), "--beam", "2"]) == 0
    out = capsys.readouterr().out.split("\n")
    assert len(out) == len(lines) + 1 and out[-1] == ""
    assert out[1] == "" and out[2] == ""  # blank source lines give blank translations
    assert out[0] and out[3] and "⁇" not in out[0] + out[3]


def test_file_input_output_and_greedy_equals_beam_1(toy_run, tmp_path):
    run_dir, _, base = toy_run
    src = base / "data" / "toy-en-de" / "test.en"
    first = src.read_text().split("\n")[:20]
    (tmp_path / "in.en").write_text("\n".join(first) + "\n")
    out = tmp_path / "out.de"
    assert main([str(run_dir), "--input", str(tmp_path / "in.en"), "--output", str(out), "--beam", "1"]) == 0
    written = out.read_text().split("\n")[:-1]
    translator = Translator.load(run_dir)
    assert written == translator.translate(first, beam=1)
    assert len(written) == 20


def test_several_files_into_a_folder_named_by_the_target_language(toy_run, tmp_path, capsys):
    run_dir, _, base = toy_run
    lines = (base / "data" / "toy-en-de" / "test.en").read_text().split("\n")
    (tmp_path / "a.en").write_text("".join(line + "\n" for line in lines[:7]))
    (tmp_path / "b.en").write_text("".join(line + "\n" for line in lines[7:10]))
    out = tmp_path / "heldout" / "run"
    assert main([str(run_dir), "--input", str(tmp_path / "a.en"), str(tmp_path / "b.en"), "--output", str(out),
                 "--beam", "1"]) == 0
    translator = Translator.load(run_dir)
    assert (out / "a.de").read_text() == "".join(t + "\n" for t in translator.translate(lines[:7], beam=1))
    assert len((out / "b.de").read_text().splitlines()) == 3
    assert sorted(p.name for p in out.iterdir()) == ["a.de", "b.de"]
    assert f"{out / 'a.de'}: 7 lines" in capsys.readouterr().err


def test_a_bad_input_file_writes_nothing(toy_run, tmp_path, capsys):
    run_dir = toy_run[0]
    (tmp_path / "good.en").write_text("The dog sleeps.\n")
    (tmp_path / "bad.en").write_bytes(b"The cat.\nA \xff broken line.\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "good.de").write_text("an earlier translation\n")
    assert main([str(run_dir), "--input", str(tmp_path / "good.en"), str(tmp_path / "bad.en"), "--output",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'bad.en'}:2: not valid UTF-8" in err  # the file and the line
    assert (out / "good.de").read_text() == "an earlier translation\n"  # nothing written: the earlier file intact
    assert main([str(run_dir), "--input", str(tmp_path / "good.en"), str(tmp_path / "good.en"), "--output",
                 str(out)]) == 2
    assert "same file: good.de" in capsys.readouterr().err
    assert main([str(run_dir), "--input", str(tmp_path / "good.en"), str(tmp_path / "bad.en")]) == 2
    assert "several --input files need --output DIR" in capsys.readouterr().err


def test_checkpoint_file_alone_is_enough(toy_run, tmp_path):
    """Checkpoints carry their SentencePiece model: a copied file translates without its run directory."""
    shutil.copy(toy_run[0] / "checkpoints" / "best.ckpt", tmp_path / "model.ckpt")
    assert Translator.load(tmp_path / "model.ckpt").translate(["The dog sleeps."], beam=1)[0]


def test_bad_checkpoints(toy_run, tmp_path, capsys):
    truncated = tmp_path / "cut.ckpt"
    data = (toy_run[0] / "checkpoints" / "best.ckpt").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert main([str(truncated)]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {truncated} is unreadable, truncated or corrupt" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(CheckpointError, match=r"checkpoints/best\.ckpt is missing"):
        find_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=r"nope\.ckpt is missing \(neither a checkpoint file nor a run directory"):
        find_checkpoint(tmp_path / "nope.ckpt")
    weights = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {}}, weights)  # a Lightning checkpoint, but not of an nmt model
    assert main([str(weights)]) == 2
    assert f"checkpoint {weights} is not an nmt checkpoint" in capsys.readouterr().err


def test_cached_and_uncached_logits_agree_on_the_trained_model(toy_run):
    """Every decoding step of a trained model gives the same logits with the cache as without it,
    for a padded batch of sentences of different lengths."""
    import torch

    from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID

    translator = Translator.load(toy_run[0])
    model, tok = translator.model, translator.tokenizer
    sentences = ["The man sees the dog.", "Today the clever woman has not read the old book in the garden.", "We hike."]
    ids = tok.encode(sentences)
    src = torch.full((3, max(map(len, ids)) + 1), PAD_ID)
    for row, x in enumerate(ids):
        src[row, : len(x)] = torch.tensor(x)
        src[row, len(x)] = EOS_ID
    hyps = translator.translate(sentences, beam=1)
    tgt = tok.encode(hyps)
    steps = max(map(len, tgt)) + 1
    tgt_in = torch.full((3, steps), PAD_ID)
    tgt_in[:, 0] = BOS_ID
    for row, y in enumerate(tgt):
        tgt_in[row, 1 : len(y) + 1] = torch.tensor(y)
    with torch.no_grad():
        memory, mask = model.encode(src)
        full = model.decode(tgt_in, memory, mask)
        cache = model.new_cache()
        cached = torch.cat([model.decode(tgt_in[:, t : t + 1], memory, mask, cache) for t in range(steps)], dim=1)
    torch.testing.assert_close(cached, full, atol=1e-4, rtol=1e-4)


def test_translations_are_the_text_evaluate_scores(toy_run, tmp_path, monkeypatch):
    """What a study commits for test sets scored elsewhere (issue #14's held-out sets) is, line for line, what
    evaluate.py would have scored: the same checkpoint, search (beam 4, α 0.6 by default) and detokenization."""
    from nmt.eval_settings import EvalSettings, ScoringSettings
    from nmt.evaluate import evaluate_run

    run_dir, _, base = toy_run
    monkeypatch.setenv("NMT_DATA_ROOT", str(base / "data"))
    scored = evaluate_run(run_dir, EvalSettings(), ScoringSettings(limit=60))
    sources = (base / "data" / "toy-en-de" / "test.en").read_text().split("\n")[:60]
    (tmp_path / "held.en").write_text("".join(line + "\n" for line in sources))
    assert main([str(run_dir), "--input", str(tmp_path / "held.en"), "--output", str(tmp_path / "held.de")]) == 0
    assert (tmp_path / "held.de").read_text().split("\n")[:-1] == scored.hypotheses
    assert len(scored.hypotheses) == 60 and len(set(scored.hypotheses)) > 30  # real, varied translations
