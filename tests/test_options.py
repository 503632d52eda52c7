"""Every numeric option is checked where it enters, in Python and in the magic alike: nothing starts."""

from __future__ import annotations

import math

import pytest
from IPython.core.error import UsageError

import flora_nb as fnb
from flora_nb._ranges import RANGES, poll_interval_problem, problem

NOWHERE = "http://127.0.0.1:9/api/v1"  # never contacted: a refused option sends nothing


@pytest.mark.parametrize("options, named", [
    ({"poll_interval": (5, -1)}, "poll_interval"), ({"poll_interval": (5, 2)}, "must not exceed"),
    ({"poll_interval": (math.nan, 2)}, "poll_interval"), ({"poll_interval": 3}, "two numbers"),
    ({"rate_limit": 0}, "rate_limit must be a finite number > 0"), ({"rate_limit": math.inf}, "rate_limit"),
    ({"max_retries": -1}, "max_retries must be a whole number >= 0"), ({"max_retries": 1.5}, "max_retries"),
    ({"reconcile_grace": math.nan}, "reconcile_grace"), ({"budget": -1}, "budget must be"),
])
def test_flora_refuses_options_out_of_range_before_anything_starts(options, named):
    with pytest.raises(fnb.InputError, match=named):
        fnb.Flora(api_key="sk_x", base_url=NOWHERE, **options)


@pytest.mark.parametrize("speed", [0, -1, math.nan, math.inf, "fast"])
def test_simulated_refuses_a_speed_out_of_range(speed):
    with pytest.raises(fnb.InputError, match="speed must be a finite number > 0"):
        fnb.Flora.simulated(speed=speed)


def test_sweep_options_are_checked_before_any_request(shared_sim, tmp_path):
    with fnb.Flora(api_key=shared_sim.api_key, base_url=shared_sim.base_url, ledger_path=tmp_path / "l.sqlite") as fl:
        before = shared_sim.stats()["runs_created"]
        for bad in (0, -2, 2.5, True, 10**6):
            with pytest.raises(fnb.InputError, match="max_concurrency must be a whole number"):
                fl.sweep("poster-studio", grid={"prompt": ["a", "b"]}, max_concurrency=bad)
        assert shared_sim.stats()["runs_created"] == before and fl.runs().empty


@pytest.fixture
def ip():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "flora_nb")
    return shell


@pytest.mark.parametrize("line, flag", [
    ("connect --sim --speed -1", "--speed"), ("connect --sim --speed 0", "--speed"),
    ("connect --sim --speed nan", "--speed"), ("connect --sim --drop-rate 2", "--drop-rate"),
    ("connect --sim --latency inf", "--latency"), ("connect --sim --max-concurrent-runs 0", "--max-concurrent-runs"),
    ("connect --sim --budget -5", "--budget"), ("sweep poster-studio prompt=[a,b] --max-concurrency 0", "--max-concurrency"),
    ("sweep poster-studio prompt=[a,b] --budget nan", "--budget"), ("sweep poster-studio prompt=a --repeat 0", "--repeat"),
    ("wait --timeout -3", "--timeout"),
])
def test_magic_flags_out_of_range_are_one_usage_error_naming_the_range(ip, line, flag):
    with pytest.raises(UsageError) as raised:
        ip.run_line_magic("flora", line)
    text = str(raised.value)
    assert f"{flag} must be a " in text and "got " in text and "_" not in text.split(" must be")[0], text


def test_a_bad_connect_keeps_the_working_session(ip, tmp_path):
    with fnb.Flora.simulated(ledger_path=tmp_path / "l.sqlite") as fl:
        fnb.session(fl)
        with pytest.raises(UsageError, match="--speed"):
            ip.run_line_magic("flora", "connect --sim --speed 0")
        assert fnb.session() is fl and not fl.closed


def test_every_range_names_itself_and_admits_its_bounds():
    for name, allowed in RANGES.items():
        if allowed.low is not None and not allowed.low_open:
            assert problem(name, allowed.low) is None, name
        if allowed.high is not None:
            assert problem(name, allowed.high) is None and problem(name, allowed.high * 2 + 1) is not None, name
        assert problem(name, math.nan) is not None and problem(name, "1") is not None and problem(name, True) is not None
        assert (problem(name, math.nan) or "").startswith(f"{name} must be ")
    assert poll_interval_problem((0.5, 2)) is None and poll_interval_problem([1, 1]) is None
