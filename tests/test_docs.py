"""The README and docs/: a front page that stays short, tables that are readings of the
committed reports, links that lead somewhere, and training compute derived as it is logged."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from lightning_densenet import report_tables
from lightning_densenet.report_tables import documents, render, run_pflop, table_names
from tests.helpers import REPO

PAGES = [*documents(), REPO / "reports/README.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_every_table_is_what_the_reports_render() -> None:
    for doc in documents():
        text = doc.read_text()
        assert render(text, doc) == text, (
            f"a table in {doc.relative_to(REPO)} differs from its report: run "
            "`python -m lightning_densenet.report_tables`"
        )


def test_the_tables_are_known_and_the_readme_has_the_results() -> None:
    names = {doc: table_names(doc.read_text()) for doc in documents()}
    assert {n for found in names.values() for n in found} <= set(report_tables.TABLES)
    assert "results" in names[REPO / "README.md"]
    for doc in documents():  # every opening comment has its end
        text = doc.read_text()
        starts = re.findall(r"^<!-- table: ", text, re.M)
        assert len(starts) == len(re.findall(r"^<!-- end table -->", text, re.M))
        assert len(starts) == len(names[doc]), doc


def test_every_relative_link_points_to_a_file() -> None:
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or an anchor on the same page
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.exists(), f"{page.relative_to(REPO)} links to missing {target}"


def test_the_readme_is_a_front_page() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    headings = re.findall(r"^## (.+)$", text, re.M)
    first = ["Results", "Set up, and check everything", "A one-minute smoke run"]
    assert headings[:5] == [*first, "What you will see", "Where things are"]
    for page in ("model", "training", "cpu-recipe", "sweep", "resume-and-distributed"):
        assert f"(docs/{page}.md)" in text
    for page in ("tf-reference", "parity", "speed", "development"):
        assert f"(docs/{page}.md)" in text


def test_license_and_python_version_agree_with_pyproject() -> None:
    project = (REPO / "pyproject.toml").read_text()
    assert 'license = { text = "MIT" }' in project
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    floor = re.search(r'requires-python = ">=(3\.\d+)"', project).group(1)
    assert f"Python {floor} or later" in (REPO / "README.md").read_text()


def _write_run(run: Path, rows: list[dict[str, object]], **model: object) -> None:
    run.mkdir(parents=True)
    config = {"model": {"arch": "densenet_tiny", **model}, "data": {"batch_size": 4}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    columns = sorted({k for r in rows for k in r})
    with (run / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


def test_training_compute_is_logged_or_derived(tmp_path) -> None:
    from lightning_densenet.flops import training_flops_per_image
    from lightning_densenet.model import build_model

    flops = {s: training_flops_per_image(build_model("densenet_tiny"), s, s) for s in (16, 32)}
    logged = tmp_path / "logged"
    _write_run(logged, [{"step": 0, "train/pflop": 0.5}, {"step": 1, "train/pflop": 0.75}])
    assert run_pflop(logged) == (0.75, True)
    # Full size throughout: 3 steps of 4 images at 32 px, exactly.
    full = tmp_path / "full"
    _write_run(full, [{"step": s, "train/samples": 4 * (s + 1)} for s in range(3)])
    assert run_pflop(full) == (pytest.approx(3 * 4 * flops[32] / 1e15), True)
    # Sizes logged at steps 1 and 3: step 2 was at 16 or 32 px; the midpoint, marked inexact.
    steps = [{"step": 1, "train/image_size": 16.0}, {"step": 3, "train/image_size": 32.0}]
    grown = tmp_path / "grown"
    _write_run(grown, steps, progressive_size=16)
    low = 4 * (3 * flops[16] + flops[32]) / 1e15
    high = 4 * (2 * flops[16] + 2 * flops[32]) / 1e15
    assert run_pflop(grown) == (pytest.approx((low + high) / 2), False)
    # Batches that were not all whole (or a resized run with no sizes logged): not measured.
    partial = tmp_path / "partial"
    _write_run(partial, [{"step": 1, "train/samples": 7}])
    unknown = tmp_path / "unknown"
    _write_run(unknown, [{"step": 1}], progressive_size=16)
    assert run_pflop(partial) is None and run_pflop(unknown) is None
    assert report_tables._pflop_cell(None) == "not measured"
    assert report_tables._pflop_cell((0.5, False)) == "≈0.500"


def test_the_compute_recipe_row_appears_with_its_report(tmp_path, monkeypatch) -> None:
    """results.json as reports/compute_recipe/summarize.py writes it: a row of seeds' mean and
    spread, first, and its figure; without the report neither."""
    reports = tmp_path / "reports"
    reports.mkdir()
    for name in ("cpu_recipe", "cpu_recipe_c15_k64", "tf_baseline"):
        (reports / name).symlink_to(REPO / "reports" / name)
    readme = tmp_path / "README.md"
    monkeypatch.setattr(report_tables, "run_pflop", lambda run: (0.5, True))
    monkeypatch.setattr(report_tables, "_flops_per_image", lambda *args: 1e9)
    without = report_tables.results(reports, readme)
    assert "compute recipe" not in without and report_tables.compute_figure(reports, readme) == ""

    runs = [
        {"run": f"version_{i}", "seed": i, "pflop": 0.25, "budget_pflop": 0.25, "epochs": 30,
         "fit_minutes": m, "gflops_per_s": g, "val_acc": 90.0, "holdout_acc": a,
         "machine": {"cores": c, "alone": c == 2}}
        for i, (m, g, a, c) in enumerate(
            [(20.0, 210.0, 91.0, 2), (60.0, 50.0, 91.5, 1), (22, 190, 92.0, 2)]
        )
    ]  # fmt: skip
    seeds = {
        "holdout_acc": {"mean": 91.5, "std": 0.5, "min": 91.0, "max": 92.0},
        "val_acc": {"mean": 90.0, "std": 0.0, "min": 90.0, "max": 90.0},
        "pflop": {"mean": 0.25, "std": 0.0, "min": 0.25, "max": 0.25},
    }
    (reports / "compute_recipe").mkdir()
    (reports / "compute_recipe/results.json").write_text(json.dumps({"runs": runs, "seeds": seeds}))
    (reports / "compute_recipe/accuracy_vs_pflop.png").write_bytes(b"")
    rows = report_tables.results(reports, readme).splitlines()
    label = "| CPU compute recipe (`cifar10_short.yaml`), 0.25 PFLOP: mean ± std of 3 seeds |"
    assert rows[2].startswith(label)
    cells = [c.strip() for c in rows[2].split("|")[2:-1]]
    # Minutes and GFLOP/s only from the runs that had both cores to themselves.
    assert cells[0] == "**91.5% ± 0.50** (91.0-92.0)" and cells[2:5] == [
        "21.0 min (the 2 cores)",
        "0.250",
        "200",
    ]
    assert cells[5] == "[compute_recipe](reports/compute_recipe)"
    figure = report_tables.compute_figure(reports, readme)
    assert (
        figure
        == "![Accuracy against training compute](reports/compute_recipe/accuracy_vs_pflop.png)\n"
    )
