"""Writing DST: nothing left behind and nothing replaced that was not asked for, whatever
happens during the write (a signal, a full disk, a read-only directory, a file appearing at
DST meanwhile, a name at the file-system limit, DST being SRC)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import pytest
import torch

import convnext_torch
from converters import ConversionError, convert_file
from tests.support.helpers import assert_one_line_error, run

CONVNEXT = Path(sys.executable).parent / "convnext"
SUFFIXES = (".keras", ".weights.h5", ".pth", ".safetensors")


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def system_temp(tmp_path, monkeypatch) -> Path:
    """An empty directory standing in for the system temporary folder (tempfile.gettempdir)."""
    path = tmp_path / "system-temp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def mount_tmpfs(path: Path, options: str) -> str | None:
    """Mount a tmpfs at `path` (made here); None, or why it could not (not root, no
    CAP_SYS_ADMIN, not Linux): the tests that need one are skipped then."""
    path.mkdir()
    if not sys.platform.startswith("linux") or shutil.which("mount") is None:
        return "needs Linux and mount(8) to make a small file system"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    return (
        f"mounting a tmpfs is not permitted here: {done.stderr.strip()}"
        if done.returncode
        else None
    )


def unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], check=True)


@contextlib.contextmanager
def mounted_tmpfs(path: Path, options: str):
    """A tmpfs mounted at `path` for the block, or the test skipped."""
    reason = mount_tmpfs(path, options)
    if reason:
        pytest.skip(reason)
    try:
        yield path
    finally:
        unmount(path)


@pytest.fixture
def full_disk(tmp_path):
    """A 5 MB file system: convnext_atto (15 MB of float32) does not fit."""
    with mounted_tmpfs(tmp_path / "full", "size=5m") as path:
        yield path


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody may create files in: a read-only tmpfs for root (whom permissions
    do not stop), a 0555 directory for anyone else."""
    if os.geteuid() != 0:
        path = tmp_path / "read-only"
        path.mkdir()
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    with mounted_tmpfs(tmp_path / "read-only", "ro,size=4m") as path:
        yield path


# --- signals ---------------------------------------------------------------------------------

# The real command, in processes of their own, for the two writers that leave more than their
# temporary file: Keras (a directory in the system's temporary folder) and safetensors (its own
# .tmpXXXX beside the file); the two others below, in this process.
SIGNALLED = [(".keras", signal.SIGTERM), (".safetensors", signal.SIGHUP)]


def bytes_under(path: Path) -> int:
    """The bytes of the files under `path`, as they are written (and removed) meanwhile."""
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(bytes_under(child) for child in path.iterdir())
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


@dataclass
class Interrupted:
    suffix: str
    signum: signal.Signals
    out: Path  # DST's directory, empty before
    system_temp: Path  # TMPDIR of the process, empty before
    process: subprocess.Popen
    signalled: bool = False
    before_rename: bool = False  # DST did not exist yet when the process was stopped
    stderr: str = field(default="", repr=False)

    @property
    def dst(self) -> Path:
        return self.out / f"tiny{self.suffix}"


@dataclass
class Finished:
    returncode: int
    stderr: str
    left: list[str]  # what the directory of DST holds afterwards


@dataclass
class Commands:
    interrupted: dict[str, Interrupted]
    full_disk: Finished | str  # or why no full disk could be made
    full_disk_dst: Path


@pytest.fixture(scope="module")
def commands(tmp_path_factory, torch_model) -> Commands:
    """The real command in processes of their own, all running at once (they take most of this
    file's time, starting TensorFlow). For SIGNALLED: convnext_tiny (114 MB) converted into
    each suffix, each process stopped (SIGSTOP) once over 1 MB of its output is on disk, which
    pins it in the middle of the write, sent its signal, and resumed. And `torch_model`
    converted to .weights.h5 on a full disk."""
    base = tmp_path_factory.mktemp("commands")
    src = base / "tiny.pth"
    with torch.device("meta"):
        shapes = {
            k: v.shape for k, v in convnext_torch.create_model("convnext_tiny").state_dict().items()
        }
    torch.save({k: torch.zeros(shape) for k, shape in shapes.items()}, src)
    jobs = []
    for suffix, signum in SIGNALLED:
        out, system_temp = base / f"out{suffix}", base / f"temp{suffix}"
        out.mkdir()
        system_temp.mkdir()
        process = subprocess.Popen(
            [CONVNEXT, "convert", src, out / f"tiny{suffix}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TMPDIR": str(system_temp)},
        )
        jobs.append(Interrupted(suffix, signum, out, system_temp, process))
    full, checkpoint = base / "full", base / "ckpt.pth"
    torch.save({"model": torch_model.state_dict()}, checkpoint)
    not_mounted = mount_tmpfs(full, "size=5m")
    if not not_mounted:
        h5 = subprocess.Popen(
            [CONVNEXT, "convert", checkpoint, full / "out.weights.h5"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        waiting, deadline = list(jobs), time.monotonic() + 180
        while waiting and time.monotonic() < deadline:
            for job in list(waiting):
                if job.process.poll() is not None:
                    waiting.remove(job)
                elif bytes_under(job.out) > 1 << 20:
                    job.process.send_signal(signal.SIGSTOP)
                    job.before_rename = not os.path.lexists(job.dst)
                    job.process.send_signal(job.signum)
                    job.process.send_signal(signal.SIGCONT)
                    job.signalled = True
                    waiting.remove(job)
            time.sleep(0.002)
        for job in jobs:
            job.stderr = finish(job.process)
        if not not_mounted:
            stderr = finish(h5)
            done = Finished(h5.returncode, stderr, entries(full))
    finally:
        if not not_mounted:
            unmount(full)
    return Commands(
        {job.suffix: job for job in jobs},
        not_mounted or done,
        full / "out.weights.h5",
    )


def finish(process: subprocess.Popen) -> str:
    """The process's stderr once it has ended (killed after two minutes)."""
    try:
        return process.communicate(timeout=120)[1]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[1] + "\n(killed: did not end)"


@pytest.mark.parametrize("suffix, signum", SIGNALLED, ids=[s for s, _ in SIGNALLED])
def test_signal_during_the_write_leaves_nothing(commands, suffix, signum):
    job = commands.interrupted[suffix]
    assert job.signalled and job.before_rename, (
        f"the write ended before the test could signal it; rerun. {job.stderr}"
    )
    assert job.process.returncode == 128 + signum, job.stderr
    assert job.stderr.strip().splitlines()[-1] == f"convnext: interrupted by {signum.name}"
    assert entries(job.out) == []  # no partial temporary, no writer's own temporary
    assert entries(job.system_temp) == []  # nor Keras' temporary directory


@pytest.mark.parametrize(
    "suffix, signum, writer",
    [
        (".weights.h5", signal.SIGHUP, (keras.Model, "save_weights")),
        (".pth", signal.SIGTERM, (torch, "save")),
    ],
    ids=[".weights.h5", ".pth"],
)
def test_signal_in_the_writer_unwinds_through_the_clean_up(
    capsys, tmp_path, checkpoint, system_temp, monkeypatch, suffix, signum, writer
):
    """The signal arrives as the writer returns, its file complete but not yet in place."""
    owner, name = writer
    write = getattr(owner, name)

    def write_then_signal(*args, **kwargs):
        write(*args, **kwargs)
        signal.raise_signal(signum)

    monkeypatch.setattr(owner, name, write_then_signal)

    def ignore(_signum, _frame):  # without the command's own handler, the signal ends pytest
        pass

    previous = signal.signal(signum, ignore)
    try:
        code, _, err = run(capsys, "convert", checkpoint, tmp_path / f"out{suffix}")
        assert signal.getsignal(signum) is ignore  # the command put the handler back
    finally:
        signal.signal(signum, previous)
    assert code == 128 + signum, err
    assert err.strip().splitlines()[-1] == f"convnext: interrupted by {signum.name}"
    assert entries(tmp_path) == ["ckpt.pth", "system-temp"] and entries(system_temp) == []


# --- a failed write --------------------------------------------------------------------------


def test_failed_keras_write_leaves_no_temporary_directory(
    capsys, tmp_path, checkpoint, system_temp, monkeypatch
):
    """Keras writes the assets of a .keras file through a temporary directory, which it leaves
    when writing the archive fails (here: the disk fills up at that moment)."""
    from keras.src.saving import saving_lib

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(saving_lib, "_write_to_zip_recursively", full)
    dst = tmp_path / "out.keras"
    code, _, err = run(capsys, "convert", checkpoint, dst)
    assert_one_line_error(code, err, f"no space left writing {dst}")
    assert entries(tmp_path) == ["ckpt.pth", "system-temp"]
    assert entries(system_temp) == []


# --- a full disk -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".keras", ".pth", ".safetensors"])
def test_full_disk_is_one_line_naming_dst(capsys, full_disk, checkpoint, system_temp, suffix):
    dst = full_disk / f"out{suffix}"
    code, _, err = run(capsys, "convert", checkpoint, dst)
    assert_one_line_error(code, err, f"no space left writing {dst}", "MB free")
    assert "reading" in err  # checked before writing, when the size is known
    assert entries(full_disk) == [] and entries(system_temp) == []


def test_full_disk_weights_h5_is_one_line_not_a_crash(commands):
    """h5py failing to write crashed the interpreter when its file was collected (exit 139,
    after h5py's tracebacks): the real command, in a process of its own (see `commands`)."""
    done, dst = commands.full_disk, commands.full_disk_dst
    if isinstance(done, str):
        pytest.skip(done)
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"convnext: error: no space left writing {dst}: it takes about")
    assert "Traceback" not in done.stderr
    assert done.left == []


@pytest.mark.parametrize("suffix", [".keras", ".pth", ".safetensors"])
def test_disk_filling_up_during_the_write_is_one_line(
    capsys, full_disk, checkpoint, system_temp, monkeypatch, suffix
):
    """The space checked before writing is gone by the time of the write (another process
    took it): each writer's own error for a full disk is translated. (Not .weights.h5: HDF5
    does not recover from a failed write, see converters.files.writers.write_keras.)"""
    monkeypatch.setattr(
        "converters.files.outputs.check_free_space", lambda *args: None, raising=False
    )
    dst = full_disk / f"out{suffix}"
    code, _, err = run(capsys, "convert", checkpoint, dst)
    assert_one_line_error(code, err, f"no space left writing {dst}")
    assert entries(full_disk) == [] and entries(system_temp) == []


# --- where DST is ----------------------------------------------------------------------------


def test_read_only_directory_is_named_before_reading(capsys, read_only_dir, checkpoint):
    dst = read_only_dir / "out.keras"
    code, _, err = run(capsys, "convert", checkpoint, dst)
    assert_one_line_error(code, err, str(dst))
    assert ".tmp" not in err
    assert "reading" not in err  # refused before the source was read


@pytest.mark.parametrize("suffix", [".weights.h5", ".safetensors"])
def test_longest_valid_name(capsys, tmp_path, checkpoint, suffix):
    dst = tmp_path / ("n" * (255 - len(suffix)) + suffix)  # 255 bytes, the usual limit
    code, _, err = run(capsys, "convert", checkpoint, dst)
    assert code == 0, err
    assert entries(tmp_path) == sorted(["ckpt.pth", dst.name])


@pytest.mark.parametrize("suffix", [".weights.h5", ".safetensors"])
def test_file_appearing_at_dst_meanwhile_is_kept(tmp_path, checkpoint, suffix):
    dst = tmp_path / f"out{suffix}"

    def log(line: str) -> None:
        if line.startswith("writing"):  # another program creates DST while this one writes
            dst.write_text("precious")

    with pytest.raises(ConversionError, match="exists.*`force`"):
        convert_file(checkpoint, dst, log=log)
    assert dst.read_text() == "precious"
    assert entries(tmp_path) == sorted(["ckpt.pth", dst.name])
    convert_file(checkpoint, dst, log=log, force=True)  # asked for: replaced
    assert dst.stat().st_size > 1000


def test_dangling_symlink_at_dst_needs_force(capsys, tmp_path, checkpoint):
    dst = tmp_path / "out.pth"
    dst.symlink_to(tmp_path / "nowhere.pth")
    code, _, err = run(capsys, "convert", checkpoint, dst)
    assert_one_line_error(code, err, "exists; pass --force")
    assert dst.is_symlink() and entries(tmp_path) == ["ckpt.pth", "out.pth"]
    code, _, err = run(capsys, "convert", checkpoint, dst, "--force")
    assert code == 0, err
    assert not dst.is_symlink() and not (tmp_path / "nowhere.pth").exists()


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_output_has_the_usual_mode(capsys, tmp_path, checkpoint, suffix):
    umask = os.umask(0o027)
    try:
        code, _, err = run(capsys, "convert", checkpoint, tmp_path / f"out{suffix}")
    finally:
        os.umask(umask)
    assert code == 0, err
    assert (tmp_path / f"out{suffix}").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink"])
def test_dst_that_is_src_is_refused(capsys, tmp_path, checkpoint, spelling):
    dst = {
        "same": checkpoint,
        "dotted": tmp_path / "." / ".." / tmp_path.name / "ckpt.pth",
        "symlink": tmp_path / "link.pth",
    }[spelling]
    if spelling == "symlink":
        dst.symlink_to(checkpoint)
    code, _, err = run(capsys, "convert", checkpoint, dst, "--force")
    assert_one_line_error(code, err, "is the source")
    assert "epoch" in torch.load(checkpoint, weights_only=True)  # the training state is kept
