"""The study report of a sweep (``nmt.sweep``): ``DIR/report/``, self-contained.

``python -m nmt.report DIR [evaluation flags]`` rewrites it from the runs in ``DIR/runs`` (the sweep calls
``nmt.report.write.write_report`` after training). It holds

- ``results.md``, ``results.csv``, ``results.json``: evaluate.py's table (one row per variant and λ: BLEU
  mean ± std over the seeds that did not diverge, diverged runs counted, Δ BLEU against ``post_ln`` with the
  paired bootstrap p-value) and the smallest difference the seed-to-seed noise of ``post_ln`` lets one
  detect (see ``detectable_difference``), and the paper's qualitative claims decided on these runs
  (``nmt.claims``: supported, contradicted or not resolved, against the test-set and the seed noise); with
  ``--also-average-last N`` a second table of the same runs scored with the average of their last N periodic
  checkpoints (the claims stay decided on the first, of each run's ``best.ckpt``);
- ``curves.png`` (validation loss, on a log scale when it spans orders of magnitude, and BLEU against updates,
  every run, coloured by variant), ``run_curves.png`` (one panel per variant, shared axes: each seed's validation
  BLEU, its best validation and where and why it stopped), ``bleu.png`` (BLEU bars with the std over seeds),
  ``grad_norms.png`` (per-layer gradient norms over the first updates, one panel per variant, geometric mean over
  its seeds; runs trained with ``--log-layer-grads N``); the figures need matplotlib (``pip install nmt[report]``),
  without it the report says so;
- the "Why" section: ``nmt.diagnose`` on each variant's best checkpoint (its first seed), a table of the
  diagnosis's summary numbers and ``why_*.png``, the diagnoses' figures side by side (``--no-why``: none;
  ``--why-only post_ln,pre_ln``: those variants only);
- ``README.md``: setup, hardware, wall time, provenance (git commits, package versions), and how every
  number was obtained; with ``--pilot DIR ...`` also how the setting and budget were chosen (``nmt.pilot``'s
  tables and ``pilot_<DIR name>.png``, checked against the study's runs);
- runs without a results.json (still training, killed or failed) are listed as left out, neither scored nor
  diagnosed.

Evaluations are cached per run in ``DIR/eval/<run>.json`` (keyed by the run's results.json and the
evaluation settings), so a rerun after one more run re-translates only that one; diagnoses likewise in
``DIR/diagnosis/<run>/`` (keyed by the checkpoint file and the diagnosis settings), and copied into
``DIR/report/diagnosis/<run>/``: the report folder links only inside itself and can be moved whole.

The package, in the order a report is written: ``runs`` (the study folder's runs, their labels and order),
``scoring`` (each run scored on the test set, cached), ``results`` (the comparison tables, with ``power``: the
smallest difference the seed noise lets one detect), ``gradient_flow`` (the gradient-flow table), ``why`` (the
diagnoses), ``figures`` (matplotlib), ``readme`` (README.md's sections), and ``cli`` (``python -m nmt.report``, and
the flags ``nmt.sweep`` shares); ``write`` puts them together: ``write_report`` writes the whole folder. This
package imports none of them. ``side_by_side`` (``python -m nmt.report.side_by_side A B``) sets two written
reports of the same variants next to each other.
"""
