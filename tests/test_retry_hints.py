"""Retry only what can succeed: failures grouped by FLORA's retry hint, retry_failed() by hint or by code.

The hint table is checked against the contract's list (flora-api.md §5.5, copied here); the sweep
tests run against the simulator, whose Faults.input_failures fails chosen prompts with chosen codes
every time, and check what was retried in the simulator's own run records.
"""

from __future__ import annotations

import collections
import re

import pytest

import flora_nb as fnb
from flora_nb import Flora
from flora_nb._hints import CHANGE_INPUT, HINTS, NOT_RETRYABLE, RETRY_LATER, RETRY_NOW, UNKNOWN, hint_for
from flora_nb.sim import Faults, FloraSimulator

POSTER = "tech_a1poster"
SAFETY = "Request rejected by the safety system. safety_violations=[violence]"

# flora-api.md §5.5, FLORA's retry hints as published (FIELD).
CONTRACT = {
    RETRY_NOW: "GENERATION_PROVIDER_TIMEOUT GPU_PROVIDER_ERROR GENERATION_GENERIC_ERROR SERVER_ERROR "
               "GENERATION_FAILED_TO_START GENERATION_FAILED_TO_UPLOAD GENERATION_FAILED_TO_UPDATE "
               "GENERATION_FAILED_TO_GET GENERATION_PREGENERATION_FAILED GENERATION_POSTGENERATION_FAILED "
               "GENERATION_MAP_AFTER_REQUEST_FAILED",
    RETRY_LATER: "GENERATION_DOWNSTREAM_SERVICE_ERROR GENERATION_QUEUE_TOO_LARGE GENERATION_INVALID_PROVIDER_RESPONSE "
                 "GENERATION_QUEUE_NOT_MOVING GENERATION_NO_RESULT GENERATION_CIRCUIT_BREAKER_OPEN "
                 "GENERATION_MODAL_POLL_ERROR AUDIO_GENERATION_ERROR GENERATION_PROVIDER_FAILED_TO_GET_STATUS",
    CHANGE_INPUT: "GENERATION_PROMPT_MODERATED LLM_REFUSAL GENERATION_INPUT_VALIDATION GENERATION_INVALID_PARAMS "
                  "GENERATION_INVALID_URL GENERATION_ENDPOINT_NOT_FOUND GENERATION_MAP_BEFORE_REQUEST_FAILED "
                  "GENERATION_PROVIDER_NOT_SUPPORTED",
    NOT_RETRYABLE: "BILLING_NOT_ENOUGH_CREDITS BILLING_CREDITS_LIMIT_EXCEEDED BILLING_WOULD_EXCEED_LIMIT "
                   "BILLING_FAILED_TO_RESERVE_CREDITS GENERATION_NOT_PAID GENERATION_CANCELLED "
                   "ACCESS_DENIED ACCESS_WORKSPACE_SUSPENDED VIDEO_ENTITLEMENT_REQUIRED",
}

# The sweep below: one prompt per kind of failure (the prompt's key word picks the code).
FAILING = {
    "timeout": "GENERATION_PROVIDER_TIMEOUT",                   # retry now
    "gpu": ("gpu_provider_error", "The GPU worker went away."),  # retry now (a code in lower case)
    "busy": "GENERATION_DOWNSTREAM_SERVICE_ERROR",              # retry later
    "moderated": "GENERATION_PROMPT_MODERATED",                 # change input
    "unsafe": ("GPU_PROVIDER_ERROR", SAFETY),                   # change input: a safety refusal
    "cancelled": "GENERATION_CANCELLED",                        # not retryable
    "novel": "SOMETHING_NEW_FROM_FLORA",                        # unknown
}
PROMPTS = ["a calm sea", "timeout owl", "gpu heron", "busy hare", "moderated fox", "unsafe wolf", "cancelled elk",
           "novel lynx"]
RETRYABLE_PROMPTS = {"timeout owl", "gpu heron", "busy hare"}
EXPECTED_HINTS = {"timeout owl": RETRY_NOW, "gpu heron": RETRY_NOW, "busy hare": RETRY_LATER,
                  "moderated fox": CHANGE_INPUT, "unsafe wolf": CHANGE_INPUT, "cancelled elk": NOT_RETRYABLE,
                  "novel lynx": UNKNOWN}


def _session(sim: FloraSimulator, ledger) -> Flora:
    return Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=ledger, poll_interval=(0.02, 0.05),
                 reconcile_grace=2.0)


def _prompts_started(sim: FloraSimulator, after: int = 0) -> collections.Counter:
    """The prompts of the runs the server created, after the first ``after`` of them."""
    return collections.Counter(r["inputs"]["prompt"] for r in sim.run_records()[after:])


def _one_line(capsys) -> str:
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    return out.strip()


# ---------------------------------------------------------------- the table


@pytest.mark.parametrize("hint", list(CONTRACT))
def test_every_code_of_the_contract_has_its_hint_in_any_case(hint):
    for code in CONTRACT[hint].split():
        assert (hint_for(code), hint_for(code.lower()), hint_for(f" {code.title()} ")) == (hint, hint, hint), code


def test_the_reference_code_unknown_codes_and_no_code():
    assert hint_for("provider_error", "The provider failed to complete the generation.") == RETRY_NOW
    assert hint_for("input_validation_error") == CHANGE_INPUT  # a start rejected with 400
    assert hint_for("SOMETHING_NEW") == hint_for(None) == hint_for("") == hint_for(float("nan")) == UNKNOWN
    assert HINTS == (RETRY_NOW, RETRY_LATER, CHANGE_INPUT, NOT_RETRYABLE, UNKNOWN)


@pytest.mark.parametrize("code", ["GPU_PROVIDER_ERROR", "GENERATION_NO_RESULT", "gpu_provider_error", "provider_error"])
def test_a_safety_refusal_in_the_message_means_change_input(code):
    assert hint_for(code, SAFETY) == CHANGE_INPUT
    assert hint_for(code, "Flagged: safety_violations=[sexual]") == CHANGE_INPUT
    assert hint_for(code, "The provider returned no result.") in (RETRY_NOW, RETRY_LATER)
    assert hint_for("GENERATION_CANCELLED", SAFETY) == NOT_RETRYABLE  # never made retryable by a message


# ---------------------------------------------------------------- the simulator's switch


def test_input_failures_fail_the_same_prompt_every_time_whatever_the_seed(tmp_path):
    codes = []
    for seed in (1, 2):
        faults = Faults(input_failures={"MODERATED": "GENERATION_PROMPT_MODERATED"})
        with FloraSimulator(speed=100.0, seed=seed, faults=faults) as sim, _session(sim, tmp_path / f"{seed}.sqlite") as fl:
            sweep = fl.sweep(POSTER, grid={"prompt": ["moderated fox", "a calm sea"]}, repeat=2).wait(60)
            codes.append(sorted((r.inputs["prompt"], r.status, r.error_code or "") for r in sweep.runs))
            assert sim.stats()["total_charged"] == pytest.approx(2 * 0.04)  # failed runs are refunded
    assert codes[0] == codes[1] == [("a calm sea", "completed", "")] * 2 + [
        ("moderated fox", "failed", "GENERATION_PROMPT_MODERATED")] * 2
    with pytest.raises(ValueError, match="input_failures"):
        Faults(input_failures={"": "GENERATION_NO_RESULT"})


# ---------------------------------------------------------------- failures() and retry_failed()


def test_retry_failed_retries_only_what_can_succeed_and_says_what_it_left(tmp_path, capsys):
    with FloraSimulator(speed=100.0, seed=4, faults=Faults(input_failures=FAILING)) as sim, \
            _session(sim, tmp_path / "l.sqlite") as fl:
        sweep = fl.sweep(POSTER, grid={"prompt": PROMPTS}).wait(60)
        failures = sweep.failures()
        assert list(failures.columns) == ["variation", "repeat", "input.prompt", "run_id", "error_code",
                                          "error_message", "hint"]
        assert dict(zip(failures["input.prompt"], failures["hint"])) == EXPECTED_HINTS
        assert list(failures["hint"]) == sorted(failures["hint"], key=HINTS.index)  # grouped, in HINTS order
        assert failures["hint"].value_counts().to_dict() == {RETRY_NOW: 2, RETRY_LATER: 1, CHANGE_INPUT: 2,
                                                              NOT_RETRYABLE: 1, UNKNOWN: 1}
        assert set(failures["run_id"]) == {r["run_id"] for r in sim.run_records() if r["status"] == "failed"}

        first = len(sim.run_records())
        sim.faults = Faults(input_failures={k: v for k, v in FAILING.items() if k in ("moderated", "unsafe", "cancelled",
                                                                                       "novel")})
        capsys.readouterr()
        assert sweep.retry_failed() is sweep
        line = _one_line(capsys)
        sweep.wait(60)
        assert _prompts_started(sim, after=first) == collections.Counter(RETRYABLE_PROMPTS)  # nothing else paid again
        assert line.startswith("Retried 3 failed runs (2 retry now, 1 retry later)")
        assert "may fail again" in line
        assert ("left 4, not started again (2 change input: GENERATION_PROMPT_MODERATED, GPU_PROVIDER_ERROR "
                "(safety refusal); 1 not retryable: GENERATION_CANCELLED; 1 unknown: SOMETHING_NEW_FROM_FLORA)") in line
        assert line.endswith("; retry_failed with their codes starts them anyway.")
        assert not re.search(r"\[|\]|=|\(\)|None|True", line)  # said in words, not in Python
        assert sweep.counts == {"completed": 4, "failed": 4}
        assert set(sweep.failures()["input.prompt"]) == set(PROMPTS) - RETRYABLE_PROMPTS - {"a calm sea"}

        assert sweep.retry_failed() is sweep  # again: the same four are left, nothing is sent
        assert _one_line(capsys).startswith("Retried 0 failed runs; left 4")
        assert len(sim.run_records()) == first + 3


def test_codes_override_the_hint(tmp_path, capsys):
    with FloraSimulator(speed=100.0, seed=4, faults=Faults(input_failures=FAILING)) as sim, \
            _session(sim, tmp_path / "l.sqlite") as fl:
        sweep = fl.sweep(POSTER, grid={"prompt": PROMPTS}).wait(60)
        first = len(sim.run_records())
        capsys.readouterr()
        sweep.retry_failed(codes=["generation_prompt_moderated", "Generation_Cancelled", "NOT_A_CODE_HERE"]).wait(60)
        assert _prompts_started(sim, after=first) == collections.Counter(["moderated fox", "cancelled elk"])
        line = _one_line(capsys)
        assert line.startswith("Retried 2 failed runs (1 change input: GENERATION_PROMPT_MODERATED; "
                               "1 not retryable: GENERATION_CANCELLED); left 5")
        assert "no failed run has NOT_A_CODE_HERE" in line
        # FLORA moderates the same prompt again: the override is the user's call, and it was paid for
        assert {r.inputs["prompt"]: r.error_code for r in sweep.runs if r.status == "failed"}["moderated fox"] \
            == "GENERATION_PROMPT_MODERATED"

        second = len(sim.run_records())
        sweep.retry_failed(codes="SOMETHING_NEW_FROM_FLORA").wait(60)  # one code as plain text
        assert _prompts_started(sim, after=second) == collections.Counter(["novel lynx"])
        capsys.readouterr()
        with pytest.raises(fnb.InputError, match="codes must be a list of FLORA error codes"):
            sweep.retry_failed(codes=[3])
        assert len(sim.run_records()) == second + 1  # a mistaken call sends nothing


def test_nothing_failed_nothing_sent(tmp_path, capsys):
    with FloraSimulator(speed=100.0, seed=4) as sim, _session(sim, tmp_path / "l.sqlite") as fl:
        sweep = fl.sweep(POSTER, grid={"prompt": ["a", "b"]}).wait(60)
        assert len(sweep.failures()) == 0 and list(sweep.failures()["hint"].cat.categories) == list(HINTS)
        capsys.readouterr()
        sweep.retry_failed().wait(10)
        assert _one_line(capsys) == "Nothing to retry: no run of this sweep has failed."
        assert len(sim.run_records()) == 2
