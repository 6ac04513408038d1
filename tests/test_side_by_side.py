"""Two study reports side by side (``python -m nmt.report.side_by_side``), from results.json files made here."""

import json

from nmt.report.side_by_side import main


def row(variant, lam, seeds, bleu, std=0.0, delta=None, p=None, diverged=0, stopped=None):
    return {"variant": variant, "lambda": lam, "seeds": seeds, "diverged": diverged, "bleu_mean": bleu,
            "bleu_std": std, "delta_bleu": delta, "p_value_max": p, "stopped": stopped}


def claim(better, worse, verdict, delta, seeds):
    return {"claim": "3. rSkip+LN improves further: it beats Post-LN", "better": better, "worse": worse,
            "verdict": verdict, "delta_bleu": delta, "seeds": seeds}


def write(folder, rows, claims, mdd, weights=("best.ckpt",)):
    folder.mkdir(parents=True)
    tables = [{"weights": w, "rows": rows, "detectable_difference": mdd} for w in weights]
    (folder / "results.json").write_text(json.dumps({"tables": tables, "claims": claims}))


def test_two_studies_side_by_side(tmp_path, capsys):
    mdd = {"sigma": 0.98, "n": 3, "significant_normal": 1.56, "significant_t": 2.21}
    write(tmp_path / "early", [row("post_ln", 1.0, 3, 3.69, 1.62, stopped="; ".join(["max_steps @ 220"] * 3)),
                               row("rskip_ln", 2.0, 3, 11.35, 0.26, 7.67, 0.001),
                               row("xskip", 2.0, 1, 0.07)],
          [claim("rskip_ln λ=2", "post_ln", "supported", 7.67, 3)], mdd)
    write(tmp_path / "study" / "report",  # a study folder holding its report/ is read too
          [row("rskip_ln", 2.0, 3, 35.1, 0.4, -0.64, 0.868), row("post_ln", 1.0, 3, 35.61, 0.19),
           row("xskip_ln", 0.5, 1, None, diverged=1, stopped="diverged @ 440")],
          [claim("rskip_ln λ=2", "post_ln", "not resolved", -0.64, 3),
           {**claim("xskip_ln λ=2", "xskip λ=2", "supported", None, 0), "why": "every run of xskip λ=2 diverged"}],
          None,
          weights=("best.ckpt", "average of the last 5 checkpoints"))
    assert main([str(tmp_path / "early"), str(tmp_path / "study"), "--labels", "220 updates", "converged"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("| variant | λ | 220 updates: seeds | 220 updates: test BLEU |")
    # the baseline first; the seeds' stops, all alike, once (an older report wrote each)
    assert lines[2] == ("| post_ln | 1 | 3 | 3.69 ± 1.62 | — | max_steps @ 220 (all 3 seeds) | 3 | 35.61 ± 0.19 | — "
                        "| — |")
    assert "| rskip_ln | 2 | 3 | 11.35 ± 0.26 | +7.67 (p 0.001) | — | 3 | 35.10 ± 0.40 | -0.64 (p 0.868) | — |" in lines
    assert "| xskip | 2 | 1 | 0.07 | — | — | — | — | — | — |" in lines  # in one study only
    assert "| xskip_ln | 0.5 | — | — | — | — | 1 | — (1 diverged) | — | diverged @ 440 |" in lines
    assert "220 updates: σ = 0.98 BLEU between seeds, n = 3" in out
    assert "converged: no variant has two seeds" in out
    assert ("| 3. rSkip+LN improves further: it beats Post-LN | rskip_ln λ=2 | post_ln | **supported** (Δ +7.67, "
            "3 seeds) | **not resolved** (Δ -0.64, 3 seeds) |") in lines
    # a claim decided without a Δ (every run of one side diverged) says why
    assert ("| xskip_ln λ=2 | xskip λ=2 | — | **supported** (every run of xskip λ=2 diverged) |") in out
    # another table of the second study, by the name the report gives it
    assert main([str(tmp_path / "early"), str(tmp_path / "study"), "--weights", "best.ckpt",
                 "average of the last 5 checkpoints"]) == 0
    assert "average of the last 5 checkpoints" in capsys.readouterr().out


def test_a_folder_without_a_report_or_without_the_table_is_named(tmp_path, capsys):
    write(tmp_path / "a", [], [], None)
    assert main([str(tmp_path / "a"), str(tmp_path / "missing")]) == 2
    assert f"{tmp_path / 'missing'}: no results.json in it or in its report/" in capsys.readouterr().err
    assert main([str(tmp_path / "a"), str(tmp_path / "a"), "--weights", "best.ckpt", "average of the last 9"]) == 2
    assert "no table of the weights 'average of the last 9' (it has: 'best.ckpt')" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    assert main([str(tmp_path / "bad"), str(tmp_path / "a")]) == 2
    assert "results.json: not a study report's results.json" in capsys.readouterr().err
