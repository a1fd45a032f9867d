"""core/files.py: folders of their own for runs started at the same moment."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from yolov4.core.files import new_dir


def test_new_dir_gives_each_caller_a_folder_of_its_own(tmp_path):
    """Callers asking for one name at the same moment each get a new, empty folder, numbered
    name, name_2, name_3, ... (the parents made as needed); a folder that exists is never
    handed out."""
    base = tmp_path / "outputs" / "predict" / "2026-01-01_00-00-00"
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: new_dir(base), range(8)))
    assert len(set(made)) == 8
    assert sorted(p.name for p in made) == sorted(
        [base.name] + [f"{base.name}_{k}" for k in range(2, 9)]
    )
    assert all(p.is_dir() and not any(p.iterdir()) for p in made)
    (base.parent / f"{base.name}_10").mkdir()  # taken by someone else: skipped
    assert new_dir(base).name == f"{base.name}_9"
    assert new_dir(base).name == f"{base.name}_11"
