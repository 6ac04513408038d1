"""The evaluation flags of nmt.translate, evaluate.py, the sweep and the report: the same flags, defaults and choices
everywhere, read back into the same settings; and every command's --help states each default once."""

import re

import pytest

from nmt import average, evaluate, sweep, translate
from nmt.decode import LENPEN_STYLES
from nmt.eval_settings import EvalSettings, ScoringSettings
from nmt.report import cli as report_cli

# each command's parser and the least it must be given
COMMANDS = {
    "nmt.translate": (translate.build_parser, ["model.ckpt"]),
    "evaluate.py": (evaluate.build_parser, ["runs/a"]),
    "nmt.sweep": (sweep.build_parser, ["--skip", "post_ln", "--out", "study"]),
    "nmt.report": (report_cli.build_parser, ["study"]),
    "nmt.average": (average.build_parser, ["--output", "avg.ckpt"]),
}
EVALUATING = ["evaluate.py", "nmt.sweep", "nmt.report"]


@pytest.mark.parametrize("command", ["nmt.translate", *EVALUATING])
def test_same_defaults_everywhere(command):
    build, required = COMMANDS[command]
    assert EvalSettings.from_args(build().parse_args(required)) == EvalSettings()
    if command in EVALUATING:
        assert ScoringSettings.from_args(build().parse_args(required)) == ScoringSettings()


@pytest.mark.parametrize("command", ["nmt.translate", *EVALUATING])
def test_flags_are_read_back(command):
    build, required = COMMANDS[command]
    args = build().parse_args([*required, "--beam", "5", "--lenpen", "1", "--lenpen-style", "fairseq"])
    assert EvalSettings.from_args(args) == EvalSettings(beam=5, lenpen=1.0, lenpen_style="fairseq")
    with pytest.raises(SystemExit):  # the length penalty styles are decode's own
        build().parse_args([*required, "--lenpen-style", "wu"])
    if command == "nmt.translate":
        assert EvalSettings.from_args(build().parse_args([*required, "--max-tokens", "100"])).max_tokens == 100
    else:
        args = build().parse_args([*required, "--average-last", "3", "--split", "valid", "--limit", "7",
                                   "--bootstrap", "50"])
        assert EvalSettings.from_args(args).average_last == 3
        assert ScoringSettings.from_args(args) == ScoringSettings(split="valid", limit=7, bootstrap=50)


def test_lenpen_styles_are_decodes():
    help_text = evaluate.build_parser().format_help()
    assert "{" + ",".join(LENPEN_STYLES) + "}" in help_text


@pytest.mark.parametrize("command", COMMANDS)
def test_help_states_each_default_once(command):
    build, _ = COMMANDS[command]
    text = build().format_help()
    entries = re.split(r"\n(?=  -)", text)  # one entry per option
    for entry in entries:
        assert entry.count("(default:") <= 1, entry
    assert "(default: None)" not in text and "(default: False)" not in text
    if command != "nmt.average":  # it has no optional flag with a default
        assert "(default:" in text
