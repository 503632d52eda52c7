"""Sweeps against the simulator: planning, validation, budgets, credits, stop, reuse, compare, gallery."""

from __future__ import annotations

import collections

import ipywidgets as w
import pytest

import flora_nb as fnb
from flora_nb import Flora
from flora_nb._plan import expand
from flora_nb.sim import Faults
from tests.waiting import until

POSTER = "tech_a1poster"  # one required text input "prompt", $0.04, image output
JINGLE = "jingle-writer"  # prompt* + style, audio + text outputs
IMG = "https://example.com/ref.png"
VID = "https://example.com/clip.mp4"


@pytest.fixture
def fl(tmp_path, ledger_at):
    with Flora.simulated(speed=100.0, seed=2, ledger=ledger_at("l")) as session:
        yield session


def _posts(fl: Flora) -> int:
    return fl.simulator.stats()["requests_by_route"].get("POST /runs/technique", 0)


# ------------------------------------------------------------------ planning


def test_expand_grid_zip_variations_repeat():
    plan = expand(grid={"a": [1, 2], "b": ["x", "y", "z"]}, fixed={"c": "k"})
    assert len(plan) == 6 and plan.varied == ["a", "b"] and plan.inputs[0] == {"c": "k", "a": 1, "b": "x"}
    zipped = expand(zip={"a": [1, 2, 3], "b": ["x", "y", "z"]}, repeat=2)
    assert [(i["a"], i["b"]) for i in zipped.inputs] == [(1, "x"), (1, "x"), (2, "y"), (2, "y"), (3, "z"), (3, "z")]
    assert zipped.variation == [0, 0, 1, 1, 2, 2] and zipped.repeat_index == [0, 1] * 3
    explicit = expand(variations=[{"a": 1}, {"a": 2, "b": 3}], grid={"c": ["p", "q"]})
    assert len(explicit) == 4 and set(explicit.varied) == {"a", "b", "c"}
    with pytest.raises(fnb.InputError, match="equal lengths"):
        expand(zip={"a": [1, 2], "b": [1]})
    with pytest.raises(fnb.InputError, match="repeat"):
        expand(grid={"a": [1]}, repeat=0)
    with pytest.raises(fnb.InputError, match="given by two"):
        expand(grid={"a": [1, 2]}, zip={"a": [3, 4]})


def test_every_bad_variation_reported_before_sending(fl):
    fl.technique(POSTER)
    with pytest.raises(fnb.InputError) as info:
        fl.sweep(POSTER, variations=[{"prompt": "fine"}, {}, {"prompt": "x", "bogus": "y"}, {"prompt": ""}])
    text = str(info.value)
    assert "3 of 4 variations are invalid" in text
    assert "variation 1" in text and "variation 2" in text and "variation 3" in text and "variation 0" not in text
    assert _posts(fl) == 0


def test_url_inputs_must_look_like_urls(fl):
    with pytest.raises(fnb.InputError, match="http"):
        fl.sweep("product-relight", grid={"product_image": ["not a url", IMG]})


def test_dry_run_plans_and_starts_nothing(fl):
    fl.technique(POSTER)
    plan = fl.sweep(POSTER, grid={"prompt": [f"p{i}" for i in range(100)]}, repeat=3, dry_run=True)
    assert len(plan) == 300 and set(plan["status"]) == {"queued"}
    assert plan["estimated_cost"].sum() == pytest.approx(300 * 0.04)
    assert list(plan.columns[:3]) == ["variation", "repeat", "input.prompt"]
    assert _posts(fl) == 0


def test_budget_refused_before_any_request(fl):
    fl.technique(POSTER)
    fl.simulator.reset_stats()
    with pytest.raises(fnb.BudgetExceededError) as info:
        fl.sweep(POSTER, grid={"prompt": ["a", "b", "c"]}, budget=0.10)
    assert info.value.estimate == pytest.approx(0.12) and info.value.budget == 0.10
    assert "$0.12" in str(info.value)
    assert fl.simulator.stats()["requests_total"] == 0


# ------------------------------------------------------------------ running


def test_grid_sweep_runs_and_frames(fl, tmp_path):
    sweep = fl.sweep(JINGLE, grid={"prompt": ["sea", "city"], "style": ["jazz", "punk"]}, repeat=2,
                     labels={"study": "jingles"}).wait(60)
    assert sweep.counts == {"completed": 8}
    frame = sweep.to_dataframe()
    assert list(frame.columns[:4]) == ["variation", "repeat", "input.prompt", "input.style"]
    assert frame["sweep_id"].eq(sweep.sweep_id).all() and frame["label.study"].eq("jingles").all()
    assert sorted(frame["variation"].unique()) == [0, 1, 2, 3] and set(frame["repeat"]) == {0, 1}
    records = {r["run_id"]: r for r in fl.simulator.run_records()}
    truth = collections.defaultdict(float)
    for run in sweep.runs:
        truth[(run.inputs["prompt"], run.inputs["style"])] += records[run.id]["charged_cost"]
    pivot = sweep.compare(values="charged_cost", aggfunc="sum")
    assert pivot.index.name == "input.prompt" and list(pivot.columns) == ["jazz", "punk"]
    for (prompt, style), total in truth.items():
        assert pivot.loc[prompt, style] == pytest.approx(total)
    assert sweep.costs()["charged_usd"].sum() == pytest.approx(fl.simulator.stats()["total_charged"])
    assert sweep.compare(values="run_seconds", index="style").shape == (2, 2)
    paths = sweep.download(tmp_path / "dl")
    assert len(paths) == 16 and any(p.name.startswith("v000_r1_sea_jazz") for p in paths)
    assert "completed" in sweep._repr_html_() and sweep.spent == pytest.approx(sum(truth.values()))


def test_max_concurrency_is_respected(tmp_path, ledger_at):
    with Flora.simulated(speed=50.0, ledger=ledger_at("l")) as fl:
        peaks = [0]
        sweep = fl.sweep(POSTER, grid={"prompt": [f"p{i}" for i in range(8)]}, max_concurrency=2)

        def done_and_sampled() -> bool:  # the server's own count never passes the cap
            live = fl.simulator.stats()["runs_by_status"]
            peaks.append(live["pending"] + live["running"])
            return sweep.done

        until(done_and_sampled, what="the sweep to end", interval=0.005)
        peak = max(peaks)
        assert 1 <= peak <= 2 and sweep.counts == {"completed": 8}


def test_budget_during_sweep(tmp_path, ledger_at):
    from flora_nb._budget import reserve_ratio

    catalog = [{
        "technique_id": "tech_jitter", "name": "Jittery", "description": "charges drift", "run_cost": 0.10,
        "inputs": [{"id": "prompt", "name": "Prompt", "type": "text"}],
        "outputs": [{"id": "image", "name": "Image", "type": "imageUrl"}],
        "duration_seconds": 2, "charge_jitter": 0.5,
    }]
    with Flora.simulated(speed=100.0, seed=4, catalog=catalog, ledger=ledger_at("l")) as fl:
        sweep = fl.sweep("tech_jitter", grid={"prompt": [f"p{i}" for i in range(10)]}, budget=1.0,
                         max_concurrency=1).wait(60)
        runs = sorted(sweep.runs, key=lambda r: r.variation)
        launched = [r for r in runs if r.status != "skipped"]
        skipped = [r for r in runs if r.status == "skipped"]
        assert skipped, "with these charges the budget runs out before the last variation"
        assert {r.error_code for r in skipped} == {"budget"} and sweep.stop_reason == "budget"
        assert all(r.charged_cost == 0.0 for r in skipped)  # never started: cost nothing
        charges: list[float] = []
        for run in launched:  # one at a time: each launch fitted charges so far plus its reserve
            ratios = [c / 0.10 for c in charges]
            reserve = 0.10 * reserve_ratio(len(ratios), min(ratios, default=None), max(ratios, default=None))
            assert sum(charges) + reserve <= 1.0 + 1e-9
            charges.append(run.charged_cost)
        ratios = [c / 0.10 for c in charges]
        assert sum(charges) + 0.10 * reserve_ratio(len(ratios), min(ratios), max(ratios)) > 1.0  # the next did not
        assert fl.simulator.stats()["runs_created"] == len(launched)
        assert fl.simulator.stats()["total_charged"] == pytest.approx(sum(charges))


def test_insufficient_credits_mid_sweep(tmp_path, ledger_at):
    with Flora.simulated(speed=100.0, faults=Faults(credits=0.10), ledger=ledger_at("l")) as fl:
        sweep = fl.sweep(POSTER, grid={"prompt": [f"p{i}" for i in range(6)]}, max_concurrency=1).wait(60)
        statuses = [r.status for r in sorted(sweep.runs, key=lambda r: r.variation)]
        assert statuses == ["completed", "completed", "failed", "skipped", "skipped", "skipped"]
        assert {r.error_code for r in sweep.runs if r.status != "completed"} == {"insufficient_credits"}
        assert fl.simulator.stats()["runs_created"] == 2


def test_stop_keeps_started_runs(tmp_path, ledger_at):
    with Flora.simulated(speed=5.0, ledger=ledger_at("l")) as fl:
        sweep = fl.sweep(POSTER, grid={"prompt": [f"p{i}" for i in range(10)]}, max_concurrency=2)
        until(lambda: _posts(fl) >= 2, what="two starts sent", interval=0.005)
        sweep.stop().wait(60)
        started = [r for r in sweep.runs if r.status != "skipped"]
        assert 2 <= len(started) < 10 and all(r.status == "completed" for r in started)
        assert {r.error_code for r in sweep.runs if r.status == "skipped"} == {"stopped"}
        assert fl.simulator.stats()["runs_created"] == len(started)


def test_reuse(fl):
    fl.sweep(POSTER, grid={"prompt": ["a", "b"]}).wait(60)
    created = fl.simulator.stats()["runs_created"]
    hint = fl.sweep(POSTER, grid={"prompt": ["a", "b", "c"]}, dry_run=True)
    assert hint["reusable"].tolist() == [True, True, False] and set(hint["status"]) == {"queued"}
    again = fl.sweep(POSTER, grid={"prompt": ["a", "b", "c"]}, reuse=True, budget=0.05).wait(60)
    frame = again.to_dataframe()
    assert frame["reused"].tolist() == [True, True, False]
    assert frame["charged_cost"].tolist()[:2] == [0.0, 0.0] and frame["output_urls"].map(len).min() > 0
    assert fl.simulator.stats()["runs_created"] == created + 1
    assert again.costs(by="technique_name")["reused"].sum() == 2
    without = fl.sweep(POSTER, grid={"prompt": ["a", "z"]})
    assert without.reusable == 1 and "reuse=True" in repr(without)
    without.wait(60)


def test_costs_analysis(fl):
    fl.sweep(POSTER, grid={"prompt": ["a", "b"]}).wait(60)
    fl.sweep(JINGLE, grid={"prompt": ["a"], "style": ["x", "y"]}).wait(60)
    by_two = fl.costs(by=["technique_name", "status"], detail=True)
    assert by_two["runs"].sum() == 4
    one = fl.costs(detail=True)
    assert set(one.index) == {"Poster Studio", "Jingle Writer"}
    assert (one["drift_usd"].abs() < 1e-9).all()  # these techniques charge their run_cost
    spend = fl.spend()
    assert spend.is_monotonic_increasing and spend.iloc[-1] == pytest.approx(fl.simulator.stats()["total_charged"])


def test_gallery_for_every_output_type(fl):
    sweeps = [
        fl.sweep(POSTER, grid={"prompt": ["a", "b"]}),                                  # image
        fl.sweep("image-to-motion", grid={"prompt": ["wave", "fire"]}),                # video
        fl.sweep(JINGLE, grid={"prompt": ["sea"], "style": ["jazz", "punk"]}),         # audio + text
        fl.sweep("art-directors-critique", grid={"image": [IMG, IMG + "?v=2"]}),      # text
        fl.sweep("brand-book", grid={"brand_name": ["Acme", "Globex"]}),               # document + image
        fl.sweep("foley-sound", grid={"video": [VID]}, fixed={"mood": "tense"}),       # videoUrl input
    ]
    kinds = collections.Counter()
    for sweep in sweeps:
        gallery = sweep.wait(60).gallery()
        for widget in _walk(gallery):
            kinds[type(widget).__name__] += 1
            if isinstance(widget, w.HTML) and "data:application/pdf;base64" in widget.value:
                kinds["pdf"] += 1
    assert kinds["Image"] >= 2 and kinds["Video"] >= 2 and kinds["Audio"] >= 3 and kinds["pdf"] == 2
    jingle = sweeps[2].gallery()
    assert any(isinstance(x, w.HTML) and "jazz" in x.value for x in _walk(jingle))


def test_gallery_escapes_inputs(fl):
    sweep = fl.sweep(POSTER, grid={"prompt": ["<script>alert(1)</script>", "b"]}).wait(60)
    html_values = [x.value for x in _walk(sweep.gallery()) if isinstance(x, w.HTML)]
    assert not any("<script>" in v for v in html_values)
    assert any("&lt;script&gt;" in v for v in html_values)


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)
