"""Every notebook executes headlessly with papermill (the ci profile: smoke cut to a few steps)."""

import json
import os
from pathlib import Path

import pytest

from kalm_lib.reproduce import NOTEBOOKS, ROOT, run_notebooks


def _outputs(nb_path: Path):
    nb = json.loads(nb_path.read_text())
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


def test_every_notebook_has_a_tagged_parameters_cell():
    for name in NOTEBOOKS:
        path = ROOT / "notebooks" / f"{name}.ipynb"
        assert path.is_file(), f"missing notebook {path}"
        nb = json.loads(path.read_text())
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{name}: needs exactly one cell tagged 'parameters'"
        src = "".join(tagged[0]["source"])
        if name != "01_data":  # the data notebook reads the mirror only; it takes output_dir instead
            assert "profile" in src and "run_dir" in src, f"{name}: parameters must include profile and run_dir"
        assert not _outputs(path), f"{name}: commit notebooks without outputs"


@pytest.mark.slow
def test_all_notebooks_run_under_papermill(tmp_path):
    os.environ.setdefault("KALM_PROJECT_ROOT", str(ROOT))
    info = run_notebooks("ci", tmp_path / "build")
    assert [k for k, v in info["notebooks"].items() if v["status"] == "ok"] == NOTEBOOKS
    for name in NOTEBOOKS:
        out = tmp_path / "build" / "notebooks" / f"{name}.ipynb"
        outputs = _outputs(out)
        assert not [o for o in outputs if o.get("output_type") == "error"], f"{name}: an error output"
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{name}: shows no figure"
    run = tmp_path / "build" / "run"
    for stage in ("pretrain", "finetune", "distill"):
        assert (run / stage / "final" / "modules.json").is_file(), stage
    assert (tmp_path / "build" / "run_info.json").is_file()
    # 05 lists the models it evaluated, so that the book shows this run's and no stale label's
    listed = json.loads((run / "eval" / "final" / "models.json").read_text())["models"]
    assert listed == ["teacher", "untrained", "pretrain", "finetune", "distill"]
    _rerun_of_finished_arms_trains_and_encodes_nothing(run)


def _rerun_of_finished_arms_trains_and_encodes_nothing(run: Path):
    """06's arms are cached: a second run (a book rebuild) builds no trainer and encodes no text, and gives back
    the same scores; a new arm then trains only itself."""
    from unittest import mock

    from kalm_lib import ablations as ab
    from kalm_lib.config import load_profile
    from kalm_lib.model import KaLMEmbedder

    cfg = load_profile("ci").ablations
    arms = ab.resolve_arms(cfg.arms)
    kw = dict(steps=cfg.steps, tasks=cfg.tasks, max_rows=cfg.max_rows)
    first = ab.run_arms(arms, "ci", run, **kw)
    with mock.patch("kalm_lib.train.StageTrainer", side_effect=AssertionError("trained again")), \
            mock.patch.object(KaLMEmbedder, "encode", side_effect=AssertionError("encoded again")):
        again = ab.run_arms(arms, "ci", run, **kw)
    assert again.main_score.tolist() == first.main_score.tolist()
    import kalm_lib.train as train

    built = []

    class Counting(train.StageTrainer):
        def __init__(self, cfg, *a, **k):
            built.append(Path(cfg.output_dir).parent.name)
            super().__init__(cfg, *a, **k)

    with mock.patch.object(train, "StageTrainer", Counting):
        ab.run_arms(ab.resolve_arms(["focal-g0"]), "ci", run, **kw)  # + its reference "ft", finished
    assert built == ["focal-g0"]


def test_reproduce_from_a_notebook_keeps_the_earlier_records(tmp_path, monkeypatch):
    """--from runs only the later notebooks (papermill stubbed: it copies the notebook) and keeps the
    earlier notebooks' entries of run_info.json, marked with the run they came from."""
    import shutil

    import papermill

    ran = []

    def fake_execute(src, dst, **kw):
        ran.append(Path(src).stem)
        shutil.copy(src, dst)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    first = run_notebooks("ci", tmp_path / "build")
    assert ran == NOTEBOOKS
    ran.clear()
    again = run_notebooks("ci", tmp_path / "build", start=NOTEBOOKS[3])
    assert ran == NOTEBOOKS[3:]
    assert list(again["notebooks"]) == NOTEBOOKS and "finished" in again
    assert all(again["notebooks"][n].get("earlier_run") == first["started"] for n in NOTEBOOKS[:3])
    assert not any("earlier_run" in again["notebooks"][n] for n in NOTEBOOKS[3:])
    saved = json.loads((tmp_path / "build" / "run_info.json").read_text())
    assert saved["notebooks"] == again["notebooks"]
    # a second --from keeps each record's own origin: 01-03 from the first run, 04 from the second (whose
    # start is rewritten so the two runs differ even when they fall in the same second)
    (tmp_path / "build" / "run_info.json").write_text(json.dumps({**saved, "started": "second-run"}))
    third = run_notebooks("ci", tmp_path / "build", start=NOTEBOOKS[4])
    assert [third["notebooks"][n].get("earlier_run") for n in NOTEBOOKS] == (
        [first["started"]] * 3 + ["second-run"] + [None] * (len(NOTEBOOKS) - 4))
    with pytest.raises(SystemExit, match="is a 'ci' run, not 'smoke'"):
        run_notebooks("smoke", tmp_path / "build", start=NOTEBOOKS[3])


def test_reproduce_from_an_unknown_notebook_names_the_choices(tmp_path):
    with pytest.raises(SystemExit, match="no such notebook.*05_evaluate"):
        run_notebooks("ci", tmp_path / "build", start="06_nope")
