"""A %flora line that does not parse starts nothing (Money safety, item 3).

`%flora sweep poster-studio prompt=[a,b --dry-run` once read `[a,b --dry-run` as the prompt and
started a paid run. The whole line is read first: an unclosed quote or bracket, a stray closing
bracket, a value of the wrong shape, an option inside a value or an unknown option is one
UsageError naming its column, and the simulator (the server's own counters) saw no request.
"""

from __future__ import annotations

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import flora_nb as fnb
from flora_nb._magic import FloraMagics
from flora_nb._magic_parse import expand, parse

POSTER = "poster-studio"


@pytest.fixture
def ip(tmp_path, monkeypatch):
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    shell = InteractiveShell.instance()
    magics = FloraMagics(shell=shell)
    shell.register_magics(magics)
    shell.run_cell("%flora connect --sim --speed 100").raise_error()
    yield shell
    if magics.session is not None:
        magics.session.close()


def _server(fl: fnb.Flora) -> tuple[int, dict[str, int]]:
    stats = fl.simulator.stats()
    return stats["runs_created"], stats["requests_by_route"]


# (line, what the message says, the text the column must point at)
REFUSED = [
    (f"sweep {POSTER} prompt=[a,b --dry-run", "a [ is not closed", "[a,b"),
    (f"sweep {POSTER} prompt=(a,b --dry-run", "a ( is not closed", "(a,b"),
    (f"sweep {POSTER} prompt={{a --dry-run", "a { is not closed", "{a --dry-run"),
    (f'run {POSTER} prompt="a red fox --wait', 'a " quote is not closed', '"a red fox'),
    (f"sweep {POSTER} prompt=[a,b]] --max-concurrency 1", "a ] closes nothing", "] --max"),
    (f"sweep {POSTER} prompt=[a,b) --max-concurrency 1", "a ) stands where the [ before it needs a ]", ") --max"),
    (f"sweep {POSTER} prompt=[a,b]x", "text follows the list's closing ]", "x"),
    (f"sweep {POSTER} prompt=[a, b --dry-run]", "--dry-run is inside a value", "--dry-run]"),
    (f"run {POSTER} prompt=a(b --wait)", "--wait is inside a value", "--wait)"),
    (f"sweep {POSTER} prompt=[a,,b]", "a list has an empty item", ",b]"),
    (f"sweep {POSTER} prompt=[a,b] --dry-rn", "unknown option --dry-rn", "--dry-rn"),
    (f"sweep {POSTER} prompt=[a,b] --dry", "unknown option --dry", "--dry"),  # no abbreviations
    (f"run {POSTER} prompt=x --label team", "expected label as key=value", "team"),
    (f"run {POSTER} prompt=x extra", "expected input as key=value", "extra"),
    (f"show {POSTER} extra", "'extra' is not expected here", "extra"),
]


@pytest.mark.parametrize("line, says, at", REFUSED)
def test_a_line_that_does_not_parse_is_refused_where_it_is_and_sends_nothing(ip, line, says, at):
    fl = fnb.session()
    before = _server(fl)
    with pytest.raises(UsageError) as refused:
        ip.run_line_magic("flora", line)
    text = str(refused.value)
    assert says in text and "nothing was sent" in text and "\n" not in text, text
    column = int(text.split("(column ", 1)[1].split(":", 1)[0].rstrip(")"))
    assert f"%flora {line}"[column - 1:].startswith(at), (column, text)
    assert _server(fl) == before  # no run created, no request of any kind
    assert fl.runs().empty


@pytest.mark.parametrize("line, flag", [
    (f"sweep {POSTER} prompt=[a,b] --repeat two", "--repeat must be a whole number >= 1, got two"),
    (f"sweep {POSTER} prompt=[a,b] --max-concurrency many", "--max-concurrency must be a whole number"),
    (f"sweep {POSTER} prompt=[a,b] --budget 1x", "--budget must be a finite number >= 0, got 1x"),
    ("runs --last 0", "--last must be a whole number >= 1"),
])
def test_an_option_value_of_the_wrong_shape_names_the_option_and_its_range(ip, line, flag):
    fl = fnb.session()
    before = _server(fl)
    with pytest.raises(UsageError, match=flag):
        ip.run_line_magic("flora", line)
    assert _server(fl) == before


def test_the_column_counts_what_was_typed_through_expansions():
    typed = "sweep poster-studio prompt=$words style={{x}} mood=[calm, $mood"
    text, values = expand(typed, {"words": ["a", "b"], "mood": "dark"})
    with pytest.raises(UsageError) as refused:
        parse(text, None, values)
    message = str(refused.value)
    column = int(message.split("(column ", 1)[1].split(":", 1)[0])
    assert f"%flora {typed}"[column - 1:] == "[calm, $mood" and "mood=[calm, $mood)" in message


def test_lines_that_do_parse_still_mean_what_they_say(ip):
    fl = fnb.session()
    plan = ip.run_line_magic("flora", "sweep jingle-writer prompt=[sea, 'city, night'] --dry-run style=jazz")
    assert isinstance(plan, pd.DataFrame) and sorted(plan["input.prompt"]) == ["city, night", "sea"]
    assert set(plan["input.style"]) == {"jazz"}  # a key=value after an option is still an input
    assert _server(fl)[0] == 0
    assert parse("sweep T p=[a,]").inputs == {"p": ["a"]}  # a trailing comma, as in Python
    assert parse("sweep T p=[a, [b, c]]").inputs == {"p": ["a", ["b", "c"]]}
    assert parse("run T p='it\\'s' q=--wait r=a(b)").inputs == {"p": "it's", "q": "--wait", "r": "a(b)"}
    text, values = expand("run T p={{x}} q=$$5 r=$nope", {})
    assert parse(text, None, values).inputs == {"p": "{x}", "q": "$5", "r": "$nope"}
