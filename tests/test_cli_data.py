"""`crapnet data summary`, `crapnet data phantom`, `crapnet superpixels` called in-process."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from crapnet_core.cli import main
from crapnet_core.data.phantom import generate_phantom


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return generate_phantom(tmp_path_factory.mktemp("cli") / "ph", n_scans=2, seed=11)


def test_summary_phantom_folder(tiny, capsys):
    assert main(["data", "summary", "--data-dir", str(tiny)]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "2 scans" in out
    lines = out.splitlines()
    header = next(ln for ln in lines if ln.lstrip().startswith("scan"))
    for col in ("shape", "slices", "spacing_mm", "min", "max", "left_kidney", "right_kidney", "spleen", "liver"):
        assert col in header
    rows = [ln.split() for ln in lines[lines.index(header) + 2 :]]
    assert [r[0] for r in rows] == ["1", "2"]
    assert all(int(r[-1]) > 0 for r in rows)  # liver voxels counted


def test_summary_dataset_name_phantom(capsys):
    assert main(["data", "summary", "--dataset", "phantom", "--scans", "1"]) == 0
    assert "phantom" in capsys.readouterr().out


def test_summary_custom_labels_yaml(tiny, tmp_path, capsys):
    labels = tmp_path / "map.yaml"
    labels.write_text("modality: MR\nlabels:\n  liver: 1\n  right_kidney: 2\n  left_kidney: 3\n  spleen: 4\n")
    assert main(["data", "summary", "--data-dir", str(tiny), "--labels", str(labels), "--scans", "2"]) == 0
    assert "liver=1" in capsys.readouterr().out


@pytest.mark.realdata
def test_summary_real_presets(chaos_dir, sabs_dir, capsys, monkeypatch):
    assert main(["data", "summary", "--data-dir", str(chaos_dir), "--preset", "chaos", "--scans", "1"]) == 0
    out = capsys.readouterr().out
    assert "256x256x37" in out and "1.25x1.25x7.7" in out
    monkeypatch.setenv("CRAPNET_DATA_ROOT", str(sabs_dir.parent))
    assert main(["data", "summary", "--dataset", "sabs", "--scans", "0", "--all-organs"]) == 0
    out = capsys.readouterr().out
    assert "257x257x148" in out and "pancreas" in out and "(CT)" in out


def test_superpixels_command(tiny, tmp_path, capsys):
    out_dir = tmp_path / "sp"
    assert main(["superpixels", "--data-dir", str(tiny), "--out", str(out_dir), "--jobs", "2", "--no-progress"]) == 0
    msg = capsys.readouterr().out
    assert "2 scans computed" in msg and "per scan" in msg
    for sid in ("1", "2"):
        sp = nib.load(str(out_dir / f"superpix_{sid}.nii.gz"))
        img = nib.load(str(tiny / f"image_{sid}.nii.gz"))
        # --out: each file on its scan's own grid, axis order and affine (it overlays image_<id>)
        assert sp.shape == img.shape and np.allclose(sp.affine, img.affine)
        arr = np.asanyarray(sp.dataobj)
        assert np.issubdtype(arr.dtype, np.integer) and arr.max() > 5
    assert main(["superpixels", "--data-dir", str(tiny), "--out", str(out_dir)]) == 0
    assert "already done" in capsys.readouterr().out


def test_superpixels_refuses_data_folder_and_bad_jobs(tiny, capsys):
    assert main(["superpixels", "--data-dir", str(tiny), "--out", str(tiny)]) == 2
    assert "data folder" in capsys.readouterr().err
    assert main(["superpixels", "--data-dir", str(tiny), "--out", str(tiny.parent / "x"), "--jobs", "0"]) == 2
    assert "--jobs" in capsys.readouterr().err


def test_phantom_command(tmp_path, capsys):
    assert main(["data", "phantom", "--out", str(tmp_path / "p"), "--scans", "1", "--seed", "2"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    assert (tmp_path / "p" / "image_1.nii.gz").is_file() and (tmp_path / "p" / "labels.json").is_file()


def test_data_without_action_prints_help(capsys):
    assert main(["data"]) == 2
    assert "summary" in capsys.readouterr().out
