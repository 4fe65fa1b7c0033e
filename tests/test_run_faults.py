"""Faults around run folders (issue 23, items 1-3): two processes on one run folder, checkpoints
of another config, operating-system errors (read-only, permission, full disk, a file where a
folder belongs) and damaged checkpoints.

Read-only file systems and permissions cannot be made for real in a test running as root, so
:func:`deny_writes` makes the operating system's calls fail the way it does there (``EROFS``
from ``mkdir``/``open``/``mkstemp``, the ``ST_RDONLY`` flag of ``statvfs``; ``EACCES`` and
``access``). A full disk is real: temporary checkpoint/NIfTI files are made links to
``/dev/full``, where every write fails with ``ENOSPC``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest
import torch
from test_training import _smoke  # tests/ is on sys.path (pytest's rootdir rule)

from crapnet_core.cli import main
from crapnet_core.engine.training import read_checkpoint, train

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--dataset", "phantom", "--profile", "smoke", "--steps", "1", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished smoke runs that differ only in the training seed (1 step each)."""
    root = tmp_path_factory.mktemp("runs")
    for seed in (0, 1):
        train(_smoke(train__steps=1, train__seed=seed), root / f"seed{seed}", progress=False)
    return root


def _copy_run(runs, name, dest):
    shutil.copytree(runs / name, dest)
    return dest


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("crapnet ") and ": error: " in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def deny_writes(monkeypatch, folder: Path, err: int = errno.EROFS) -> None:
    """Make writes under ``folder`` fail as on a read-only file system (EROFS) or without permission (EACCES)."""
    folder = Path(folder).absolute()
    real = types.SimpleNamespace(
        mkdir=os.mkdir, open=os.open, mkstemp=tempfile.mkstemp, access=os.access, statvfs=os.statvfs
    )

    def under(path) -> bool:
        p = Path(os.fsdecode(path)).absolute()
        return p == folder or folder in p.parents

    def fail(path):
        raise OSError(err, os.strerror(err), os.fsdecode(path))

    def mkdir(path, *a, **k):
        if under(path):
            fail(path)
        return real.mkdir(path, *a, **k)

    def open_(path, flags, *a, **k):
        if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            fail(path)
        return real.open(path, flags, *a, **k)

    def mkstemp(*a, dir=None, **k):
        if dir is not None and under(dir):
            fail(dir)
        return real.mkstemp(*a, dir=dir, **k)

    def access(path, mode, *a, **k):
        if err == errno.EACCES and under(path) and mode & os.W_OK:
            return False
        return real.access(path, mode, *a, **k)

    def statvfs(path):
        st = real.statvfs(path)
        if err == errno.EROFS and under(path):
            fields = {k: getattr(st, k) for k in dir(st) if k.startswith("f_")}
            fields["f_flag"] = st.f_flag | os.ST_RDONLY
            return types.SimpleNamespace(**fields)
        return st

    for name, fn in (("mkdir", mkdir), ("open", open_), ("access", access), ("statvfs", statvfs)):
        monkeypatch.setattr(os, name, fn)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def full_disk(monkeypatch, suffix: str, after: int = 0) -> None:
    """From the ``after``-th on, temporary files ending in ``suffix`` are links to /dev/full (ENOSPC)."""
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full is not available")
    real = tempfile.mkstemp
    count = {"n": 0}

    def mkstemp(*a, **k):
        fd, path = real(*a, **k)
        if str(k.get("suffix", "")).endswith(suffix):
            count["n"] += 1
            if count["n"] > after:
                os.close(fd)
                os.unlink(path)
                os.symlink("/dev/full", path)
                fd = os.open(os.devnull, os.O_RDONLY)
        return fd, path

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def no_long_work(monkeypatch):
    """Fail the test if training or evaluation starts its long work."""
    import crapnet_core.engine.evaluation as evaluation
    import crapnet_core.engine.training as training

    def boom(*a, **k):
        raise AssertionError("the long work started before the output folder was checked")

    monkeypatch.setattr(training, "build_episodes", boom)
    monkeypatch.setattr(evaluation, "evaluate_model", boom)


# ---------------------------------------------------------------------- 1. one writer per run folder
def test_a_busy_run_folder_stops_a_second_training_naming_the_holder(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    code = (
        "import sys, time\nfrom crapnet_core.engine.locks import run_lock\n"
        "with run_lock(sys.argv[1], command='crapnet train --seed 7 --out run'):\n"
        "    print('held', flush=True)\n    time.sleep(120)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        no_long_work(monkeypatch)
        assert main([*TRAIN, "--out", str(run)]) == 2
        line = _one_line(capsys.readouterr().err)
        assert str(run) in line and f"process {holder.pid}" in line and "crapnet train --seed 7" in line
        assert not (run / "config.json").exists()
        assert main(["evaluate", str(run), "--no-progress"]) == 2  # not a run folder yet: said so
        capsys.readouterr()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: the kernel dropped its lock, the folder is free
    from crapnet_core.engine.locks import lock_holder

    assert lock_holder(run) is None


def test_a_waiting_caller_says_whom_it_waits_for(tmp_path, caplog):
    import threading
    import time

    from crapnet_core.engine.locks import RunFolderBusy, run_lock

    held, release = threading.Event(), threading.Event()

    def other():
        with run_lock(tmp_path / "run", command="crapnet evaluate run"):
            held.set()
            release.wait(10)

    t = threading.Thread(target=other)
    t.start()
    held.wait(10)
    with pytest.raises(RunFolderBusy, match=r"in use by process \d+ \(crapnet evaluate run\)"):
        with run_lock(tmp_path / "run", wait=False):
            pass
    threading.Timer(0.3, release.set).start()
    t0 = time.time()
    with caplog.at_level(logging.WARNING), run_lock(tmp_path / "run", wait=True):
        with run_lock(tmp_path / "run", wait=False):  # re-entrant in the holding thread
            pass
    assert time.time() - t0 > 0.2 and "waiting for it" in caplog.text
    t.join()


def test_a_checkpoint_of_another_config_is_refused(runs, tmp_path, capsys):
    # the outcome of two trainings racing into one folder: seed 0's config.json, seed 1's checkpoints
    mixed = _copy_run(runs, "seed0", tmp_path / "mixed")
    shutil.rmtree(mixed / "checkpoints")
    shutil.copytree(runs / "seed1" / "checkpoints", mixed / "checkpoints")
    assert main(["evaluate", str(mixed), "--no-progress"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "belongs to another config" in line and "train.seed: checkpoint 1 vs run 0" in line
    assert not (mixed / "metrics.json").exists()
    # an explicit --checkpoint of another run, and --resume, are refused alike
    assert (
        main(
            ["evaluate", str(runs / "seed0"), "--checkpoint", str(runs / "seed1/checkpoints/last.pt"), "--no-progress"]
        )
        == 2
    )
    assert "belongs to another config" in capsys.readouterr().err
    # a checkpoint written before hashes were stored: compared through the config stored in it
    state = read_checkpoint(mixed / "checkpoints" / "last.pt")
    del state["config_hash"]
    torch.save(state, mixed / "checkpoints" / "last.pt")
    assert main(["evaluate", str(mixed), "--no-progress"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "predates stored hashes" in line and "train.seed" in line


# ---------------------------------------------------------------------- 2. operating-system errors
@pytest.mark.parametrize("err,words", [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission")])
def test_an_unwritable_output_folder_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, err, words):
    locked = tmp_path / "locked"
    locked.mkdir()
    deny_writes(monkeypatch, locked, err)
    no_long_work(monkeypatch)
    assert main([*TRAIN, "--out", str(locked / "run")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(locked) in line and words in line
    assert not (locked / "run").exists()


def test_evaluate_and_segment_into_an_unwritable_folder(runs, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    run = _copy_run(runs, "seed0", ro / "run")
    from crapnet_core.data import datasets as ds

    spec = ds.resolve_dataset("phantom")
    sid = ds.scan_ids(spec)[0]
    deny_writes(monkeypatch, ro, errno.EROFS)
    no_long_work(monkeypatch)
    assert main(["evaluate", str(run), "--no-progress"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(run) in line and "read-only file system" in line
    import crapnet_core.engine.segment as segment

    monkeypatch.setattr(segment, "predict_chunks", lambda *a, **k: (_ for _ in ()).throw(AssertionError("work")))
    assert (
        main(
            [
                "segment",
                "--run",
                str(runs / "seed0"),
                "--support-image",
                str(ds.image_path(spec, sid)),
                "--support-label",
                str(ds.label_path(spec, sid)),
                "--query-image",
                str(ds.image_path(spec, sid)),
                "--out",
                str(ro / "out" / "pred.nii.gz"),
            ]
        )
        == 2
    )
    line = _one_line(capsys.readouterr().err)
    assert str(ro) in line and "read-only file system" in line


def test_a_full_disk_during_training_says_no_space_left(tmp_path, capsys, monkeypatch):
    full_disk(monkeypatch, ".pt")
    assert main([*TRAIN, "--out", str(tmp_path / "run")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "step_1.pt: no space left on device" in line and "MB free there" in line
    assert not list((tmp_path / "run").glob("checkpoints/*.pt"))


def test_torch_zip_writer_error_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    """torch's own writer hides the errno ("unexpected pos"): the free space decides."""
    from collections import namedtuple

    from crapnet_core import io

    def opaque(obj, f, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", opaque)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 0))
    with pytest.raises(OSError) as info:
        io.save_torch(tmp_path / "ckpt.pt", {"a": 1})
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "ckpt.pt")
    assert not list(tmp_path.iterdir())  # no temporary file left


def test_a_full_disk_during_evaluation_leaves_the_folder_as_it_was(runs, tmp_path, capsys, monkeypatch):
    run = _copy_run(runs, "seed0", tmp_path / "run")
    full_disk(monkeypatch, ".nii.gz", after=3)  # the 4th prediction file hits the full disk
    assert main(["evaluate", str(run), "--no-progress"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "no space left on device" in line and "predictions" in line
    assert not (run / "metrics.json").exists() and not (run / "predictions").exists()
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in (runs / "seed0").iterdir())


def test_too_little_free_space_for_the_checkpoints_is_said_before_training(tmp_path, capsys, monkeypatch):
    from collections import namedtuple

    real = shutil.disk_usage
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(real(p).total, real(p).used, 3 * 2**20))
    assert main([*TRAIN, "--out", str(tmp_path / "run")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "not enough free space" in line and "MB needed, 3 MB free" in line and str(tmp_path / "run") in line
    assert not list((tmp_path / "run").glob("checkpoints/*.pt"))


def test_a_file_where_a_folder_belongs(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main([*TRAIN, "--out", str(tmp_path / "notes.txt" / "run")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "notes.txt" in line and ("not a folder" in line or "a file" in line)
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------- 3. damaged checkpoints
def _params(path):
    return read_checkpoint(path)["model"]


def test_resume_takes_the_newest_intact_checkpoint(tmp_path, caplog):
    cfg = _smoke(train__steps=4, train__checkpoint_every=1, train__keep_checkpoints=4)
    full = train(cfg, tmp_path / "full", progress=False)

    class Killed(Exception):
        pass

    def kill_at_3(step, _losses):
        if step == 3:
            raise Killed

    for name in ("cut", "cut2"):
        with pytest.raises(Killed):
            train(cfg, tmp_path / name, progress=False, on_step=kill_at_3)
    ckpts = tmp_path / "cut" / "checkpoints"
    # last.pt is its own file, not a second name of the newest step file
    assert os.stat(ckpts / "last.pt").st_ino != os.stat(ckpts / "step_3.pt").st_ino
    assert os.stat(ckpts / "last.pt").st_nlink == 1
    (ckpts / "last.pt").write_bytes(b"overwritten")  # damage to last.pt leaves step_3.pt intact
    with caplog.at_level(logging.WARNING):
        resumed = train(cfg, tmp_path / "cut", resume=True, progress=False)
    assert "last.pt skipped: unreadable checkpoint" in caplog.text and "resuming from step_3.pt (step 3)" in caplog.text
    a, b = _params(full), _params(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # both the copy and the newest step file damaged: the step before, and still the uninterrupted result
    ckpts = tmp_path / "cut2" / "checkpoints"
    (ckpts / "last.pt").write_bytes(b"")
    with open(ckpts / "step_3.pt", "r+b") as fh:
        fh.truncate(1000)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        resumed = train(cfg, tmp_path / "cut2", resume=True, progress=False)
    assert "step_3.pt skipped" in caplog.text and "resuming from step_2.pt (step 2)" in caplog.text
    b = _params(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_support_and_kshot_evaluations_follow_the_run_folder_rules(runs, tmp_path, capsys, caplog, monkeypatch):
    """evaluate --supports / --shots (engine.support, through evaluation.load_run) use a run as
    evaluate does: the checkpoint of the run's config, the run folder's lock, the intact copy of a
    damaged last.pt, a writable folder checked before the work."""
    import threading

    import crapnet_core.engine.support as support
    from crapnet_core.engine.locks import run_lock

    mixed = _copy_run(runs, "seed0", tmp_path / "mixed")
    shutil.rmtree(mixed / "checkpoints")
    shutil.copytree(runs / "seed1" / "checkpoints", mixed / "checkpoints")
    assert main(["evaluate", str(mixed), "--shots", "1", "--no-progress"]) == 2
    assert "belongs to another config" in _one_line(capsys.readouterr().err)
    assert not (mixed / support.KSHOT_FILE).exists()

    run = _copy_run(runs, "seed0", tmp_path / "run")
    held, release = threading.Event(), threading.Event()

    def other():
        with run_lock(run, command="crapnet train --out run"):
            held.set()
            release.wait(10)

    t = threading.Thread(target=other)
    t.start()
    try:
        assert held.wait(10)
        assert main(["evaluate", str(run), "--supports", "all", "--no-progress"]) == 2
        line = _one_line(capsys.readouterr().err)
        assert str(run) in line and "crapnet train --out run" in line
    finally:
        release.set()
        t.join()
    assert not (run / support.SENSITIVITY_FILE).exists()

    (run / "checkpoints" / "last.pt").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        assert main(["evaluate", str(run), "--shots", "1", "--no-progress"]) == 0
    assert "last.pt skipped" in caplog.text
    ks = json.loads((run / support.KSHOT_FILE).read_text())
    assert (ks["checkpoint"], ks["step"], [p["k"] for p in ks["points"]]) == ("step_1.pt", 1, [1])

    ro = _copy_run(runs, "seed0", tmp_path / "ro" / "run")
    deny_writes(monkeypatch, ro.parent, errno.EROFS)
    monkeypatch.setattr(support, "support_sensitivity", lambda *a, **k: (_ for _ in ()).throw(AssertionError("work")))
    assert main(["evaluate", str(ro), "--supports", "all", "--no-progress"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(ro) in line and "read-only file system" in line


def test_evaluate_uses_the_intact_copy_of_a_damaged_last_checkpoint(runs, tmp_path, capsys, caplog):
    run = _copy_run(runs, "seed0", tmp_path / "run")
    (run / "checkpoints" / "last.pt").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        assert main(["evaluate", str(run), "--no-progress", "--no-predictions"]) == 0
    assert "last.pt skipped" in caplog.text
    m = json.loads((run / "metrics.json").read_text())
    assert m["step"] == 1 and m["checkpoint"].endswith("step_1.pt")
    # no intact checkpoint of the final step: an error that says what is left, never an earlier step's Dice
    (run / "checkpoints" / "step_1.pt").write_bytes(b"")
    assert main(["evaluate", str(run), "--no-progress"]) == 2
    assert "no intact checkpoint" in capsys.readouterr().err
