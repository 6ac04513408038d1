"""--patience, --min-delta and --patience-from: the counting rule, a real run that stops by it, what it records, and
resume."""

import json

import pytest
import torch
from conftest import metrics, synthetic_corpus

from nmt.early_stopping import EarlyStopping
from nmt.train import main


def count(values, patience, min_delta=0.0, start=0):
    """(validations in a row without a counted best, best, update of the best) after each value (updates 1, 2, …)."""
    early = EarlyStopping(patience, min_delta, start)
    out = []
    for step, value in enumerate(values, start=1):
        early.observe(value, step)
        out.append((early.bad_validations, early.best, early.best_step))
    return out


def test_patience_counts_validations_without_a_new_best():
    trace = count([10.0, 12.0, 11.0, 12.0, 12.5, 9.0], patience=2)
    assert [bad for bad, _, _ in trace] == [0, 0, 1, 2, 0, 1]  # an equal score is no improvement (fairseq's rule)
    assert trace[-1][1:] == (12.5, 5)


def test_min_delta_improvements_below_it_do_not_count_but_still_make_the_best():
    trace = count([10.0, 10.3, 10.45, 11.2, 11.0], patience=5, min_delta=0.5)
    # 10.3 and 10.45 beat 10.0 by less than 0.5: not counted; 11.2 does (10.0 + 0.5 < 11.2): the count resets
    assert [bad for bad, _, _ in trace] == [0, 1, 2, 0, 1]
    assert [(best, step) for _, best, step in trace] == [(10.0, 1), (10.3, 2), (10.45, 3), (11.2, 4), (11.2, 4)]


def test_patience_from_ignores_a_noisy_start_but_follows_its_best():
    # a slow starter: BLEU near 0, up and down, until it begins to use the source at update 5
    start = [0.4, 0.2, 0.3, 0.1, 2.0, 6.0, 5.5]
    assert [bad for bad, _, _ in count(start, patience=2)] == [0, 1, 2, 3, 0, 0, 1]  # would stop at update 3
    trace = count(start, patience=2, start=4)
    assert [bad for bad, _, _ in trace] == [0, 0, 0, 1, 0, 0, 1]  # counted from update 4 on
    assert [(best, step) for _, best, step in trace][:4] == [(0.4, 1)] * 4  # the best is followed all along
    # from update 4 on the rule is the plain one: a late plateau still stops the run
    assert [bad for bad, _, _ in count([1.0, 0.5, 0.5, 0.5, 0.5], patience=2, start=3)] == [0, 0, 1, 2, 3]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(-1)
    with pytest.raises(ValueError, match="min_delta"):
        EarlyStopping(2, -0.1)
    with pytest.raises(ValueError, match="start"):
        EarlyStopping(2, 0.0, -5)


@pytest.fixture(scope="module")
def frozen(tmp_path_factory):
    """A corpus, and train.py flags under which the model cannot change its translations (learning rate 1e-12):
    every validation gives the first one's BLEU, so --patience N stops exactly at validation N + 1."""
    base = tmp_path_factory.mktemp("patience")
    data = synthetic_corpus(base / "corpus", train=200, valid=12, test=12)
    flags = ["--data", str(data), "--vocab-size", "500", "--max-tokens", "400", "--lr", "1e-12", "--warmup", "1",
             "--val-every", "4", "--log-every", "4", "--max-steps", "40"]
    return base, flags


def test_a_run_stops_by_patience_and_records_why_and_where(frozen, monkeypatch, capsys):
    base, flags = frozen
    monkeypatch.chdir(base)
    run = base / "stops"
    assert main([*flags, "--patience", "2", "--run-dir", str(run)]) == 0
    result = json.loads((run / "results.json").read_text())
    assert ((result["stop_reason"], result["best_step"], result["steps"], result["finished"])
            == ("patience", 4, 12, True))
    assert [int(r["step"]) for r in metrics(run) if r["val/bleu"]] == [4, 8, 12]
    assert "early stop at update 12" in capsys.readouterr().out
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["callbacks"]
    assert state["EarlyStopping"]["bad_validations"] == 2 and state["EarlyStopping"]["stopped_at"] == 12

    # resumed with a larger budget it does not train on: its patience is spent (as the uninterrupted run's was)
    assert main(["--resume", "--run-dir", str(run), "--max-steps", "100"]) == 0
    assert json.loads((run / "results.json").read_text())["steps"] == 12
    assert "already exhausted at update 12" in capsys.readouterr().out
    # with more patience it does: one validation more
    assert main(["--resume", "--run-dir", str(run), "--max-steps", "100", "--patience", "3"]) == 0
    result = json.loads((run / "results.json").read_text())
    assert (result["stop_reason"], result["best_step"], result["steps"]) == ("patience", 4, 16)


def test_patience_from_delays_the_stop(frozen, monkeypatch, capsys):
    base, flags = frozen
    monkeypatch.chdir(base)
    run = base / "late"
    # the validations at 4 and 8 do not count: the two without a new best are those at 12 and 16
    assert main([*flags, "--patience", "2", "--patience-from", "10", "--run-dir", str(run)]) == 0
    result = json.loads((run / "results.json").read_text())
    assert (result["stop_reason"], result["best_step"], result["steps"]) == ("patience", 4, 16)
    assert "(--patience 2, counted from update 10)" in capsys.readouterr().out


def test_the_count_survives_a_stop_and_resume_before_patience_runs_out(frozen, monkeypatch):
    base, flags = frozen
    monkeypatch.chdir(base)
    run = base / "resumed"
    # stopped by its update budget after validations at 4 and 8 (one without a new best) ...
    assert main([*flags, "--patience", "2", "--max-steps", "8", "--run-dir", str(run)]) == 0
    first = json.loads((run / "results.json").read_text())
    assert (first["stop_reason"], first["steps"]) == ("max_steps", 8)
    # ... and resumed: the count continues from the checkpoint, so it stops at 12 as the uninterrupted run did
    assert main(["--resume", "--run-dir", str(run), "--max-steps", "40"]) == 0
    result = json.loads((run / "results.json").read_text())
    assert (result["stop_reason"], result["best_step"], result["steps"]) == ("patience", 4, 12)


def test_bad_patience_flags_are_one_line_errors(frozen, monkeypatch, capsys):
    base, flags = frozen
    monkeypatch.chdir(base)
    for flag, value in (("--patience", "-1"), ("--min-delta", "-0.5"), ("--patience-from", "-100")):
        assert main([*flags, flag, value, "--run-dir", str(base / "bad")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"train.py: error: {flag} must be ≥ 0") and "\n" not in err
        assert not (base / "bad").exists()
