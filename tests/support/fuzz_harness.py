"""The fuzzing harness of tests/files/test_fuzz.py: a long-lived child process runs the readers
and reports what each raised, how long it took and how far its peak memory rose; the parent
gives each read a time limit and watches the child, so that a hang or a crash is a failure of
its own (see that file's docstring)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, note, settings

ROOT = Path(__file__).resolve().parents[2]
LONG_RUN = int(os.environ.get("CONVNEXT_FUZZ_EXAMPLES", "0") or 0)
READ_TIMEOUT = float(os.environ.get("CONVNEXT_FUZZ_TIMEOUT", "30"))  # seconds a read may take
LOG = os.environ.get("CONVNEXT_FUZZ_LOG")  # a file to append every read's outcome to (JSON lines)
START_TIMEOUT = 180.0  # seconds a child may take to import torch / TensorFlow and warm up
MEMORY_GROWTH = 512 << 20  # how far one read may raise the child's peak resident memory
ADDRESS_SPACE = 3 << 30  # the child's address space beyond what it has once warm
# A tiny ConvNeXt (56 tensors, 5,195 parameters): every read takes milliseconds, or one
# Keras model build.
SPEC_FIELDS = {"depths": (1, 1, 1, 1), "dims": (8, 8, 8, 8), "num_classes": 3}


def fuzz_settings(examples: int) -> settings:
    """`examples` derandomized examples in the default run; CONVNEXT_FUZZ_EXAMPLES random ones
    in the long run. Hypothesis' database stays off: it would write .hypothesis/ into the
    working tree, and a failure prints what reproduces it."""
    common = {
        "deadline": None,  # the child process enforces READ_TIMEOUT
        "database": None,
        "suppress_health_check": [
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    }
    if LONG_RUN:
        return settings(max_examples=LONG_RUN, derandomize=False, print_blob=True, **common)
    return settings(max_examples=examples, derandomize=True, **common)


# --- the child process that runs the readers -----------------------------------------------


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM, VmSize), 0 where there is none."""
    with contextlib.suppress(OSError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    return 0


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so that it measures one read alone."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def serve(kind: str) -> None:
    """The child: one request per line on stdin ({"path": ...} or {"limit": bytes}), one JSON
    reply per line on the file descriptor CONVNEXT_FUZZ_REPLY_FD."""
    die_with_parent()
    reply = os.fdopen(int(os.environ["CONVNEXT_FUZZ_REPLY_FD"]), "w")
    read = child_reader(kind)
    reply.write(json.dumps({"ready": True}) + "\n")
    reply.flush()
    for line in sys.stdin:
        request = json.loads(line)
        if "limit" in request:
            cap = status_kib("VmSize") * 1024 + request["limit"]
            try:
                resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))
            except (ValueError, OSError):  # a hard limit below it, or macOS
                cap = None
            reply.write(json.dumps({"limit": cap}) + "\n")
            reply.flush()
            continue
        reply.write(json.dumps(read_once(read, Path(request["path"]))) + "\n")
        reply.flush()


def die_with_parent() -> None:
    """Linux: be killed when the test process dies, even in the middle of a hung read (the
    child has a session of its own, out of reach of the terminal's Ctrl-C)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if str(os.getppid()) != os.environ.get("CONVNEXT_FUZZ_PARENT"):  # died before prctl
            os._exit(1)


def read_once(read: Callable[[Path], object], path: Path) -> dict:
    """Run one read; what it raised, how long it took and how far the peak RSS rose."""
    from converters.errors import ConversionError

    exact = reset_peak_rss()
    rss_before = status_kib("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result: dict = {"outcome": "ok"}
    try:
        read(path)
    except ConversionError as e:
        result = {"outcome": "ConversionError", "message": str(e)}
    except BaseException as e:  # noqa: B036  (anything else is what the fuzzer looks for)
        result = {
            "outcome": "other",
            "type": f"{type(e).__module__}.{type(e).__qualname__}",
            "message": str(e)[:2000],
            "traceback": "".join(traceback.format_exception(e)[-12:])[-6000:],
        }
    result["seconds"] = time.perf_counter() - start
    if exact:
        result["peak_growth"] = max(0, status_kib("VmHWM") - rss_before) * 1024
    else:  # ru_maxrss: the peak since the start; KiB on Linux, bytes on macOS
        unit = 1 if sys.platform == "darwin" else 1024
        result["peak_growth"] = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss_before
        ) * unit
    return result


def child_reader(kind: str) -> Callable[[Path], object]:
    if kind == "selftest":
        return misbehave
    if kind == "torch":
        from converters.files.checkpoint import load_state_dict

        return load_state_dict
    from converters.startup import import_tensorflow_quietly

    import_tensorflow_quietly()
    import keras

    from converters.files.keras_files import load_keras_model
    from convnext_spec.spec import ModelSpec

    spec = ModelSpec(**SPEC_FIELDS)

    def read(path: Path) -> object:
        try:
            return load_keras_model(path, spec)
        finally:
            keras.backend.clear_session()  # each read builds a model: keep memory flat

    return read


def misbehave(path: Path) -> None:
    """The self-test's reader: does what the file says, to show that the parent sees it."""
    from converters.errors import ConversionError

    what = path.read_text().strip()
    if what == "segfault":
        import ctypes

        ctypes.string_at(0)
    elif what == "abort":
        os.abort()
    elif what == "hang":
        time.sleep(3600)
    elif what == "exit":
        os._exit(3)
    elif what == "raise":
        raise KeyError("stage")
    elif what == "conversion":
        raise ConversionError("a clean refusal")
    elif what == "two lines":
        raise ConversionError("a refusal\nover two lines")
    elif what == "memory":
        assert len(b"x" * (MEMORY_GROWTH + (64 << 20))) > MEMORY_GROWTH  # touched, resident
    elif what == "huge":
        assert len(b"x" * (ADDRESS_SPACE + (1 << 30)))  # beyond the cap: MemoryError


class Reader:
    """The parent's handle on a child running `kind`'s readers, restarted after a crash or a
    hang. `warm` are valid files read first (they must read); then the address space is
    capped."""

    def __init__(self, kind: str, log: Path, warm: list[Path]):
        self.kind, self.log, self.warm = kind, log, warm
        self.process: subprocess.Popen | None = None
        self.log_mark = 0  # where the log stood when the last read began
        self.limit: int | None = None

    def start(self) -> None:
        receive, send = os.pipe()
        env = dict(
            os.environ,
            CONVNEXT_FUZZ_REPLY_FD=str(send),
            CONVNEXT_FUZZ_PARENT=str(os.getpid()),
            MALLOC_ARENA_MAX="2",  # few malloc arenas: the address-space cap measures memory
        )
        env.setdefault("KERAS_BACKEND", "tensorflow")
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    f"from tests.support.fuzz_harness import serve; serve({self.kind!r})",
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                pass_fds=(send,),
                start_new_session=True,  # its own process group: a hang is killed whole
            )
        os.close(send)
        self.replies, self.buffer = receive, b""
        if self.receive(START_TIMEOUT) in (None, "eof"):
            self.stop()
            pytest.fail(f"the {self.kind} reader process did not start:\n{self.log_tail()}")
        for path in self.warm:
            result = self.read(path)
            assert result["outcome"] == "ok", f"the valid {path.name} does not read: {result}"
        self.request({"limit": ADDRESS_SPACE})
        reply = self.receive(START_TIMEOUT)
        assert isinstance(reply, dict), f"the {self.kind} reader process died:\n{self.log_tail()}"
        self.limit = reply["limit"]  # None where the address space could not be capped

    def request(self, message: dict) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        self.process.stdin.flush()

    def receive(self, timeout: float) -> dict | str | None:
        """The next reply; "eof" when the child died, None when it ran past `timeout`."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.replies], [], [], left)
            if ready:
                chunk = os.read(self.replies, 1 << 16)
                if not chunk:
                    return "eof"
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def read(self, path: Path, timeout: float = READ_TIMEOUT) -> dict:
        """One read of `path` in the child: its reply, or outcome "crash" / "hang"."""
        if self.process is None:
            self.start()
        with contextlib.suppress(OSError):
            self.log_mark = self.log.stat().st_size
        try:
            self.request({"path": str(path)})
        except BrokenPipeError:
            reply = "eof"
        else:
            reply = self.receive(timeout)
        if isinstance(reply, dict):
            return reply
        assert self.process is not None
        if reply is None:
            self.stop(kill=True)
            return {"outcome": "hang", "message": f"no answer within {timeout:g} s"}
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        self.stop()
        if code is not None and code < 0:
            how = f"killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with status {code}"
        return {"outcome": "crash", "message": how, "log": self.log_tail()}

    def log_tail(self) -> str:
        """What the child wrote (stdout and stderr) since the last read began."""
        with contextlib.suppress(OSError), open(self.log, "rb") as log:
            log.seek(self.log_mark)
            return log.read().decode(errors="replace")[-3000:]
        return ""

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(timeout=0 if kill else 5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # the group this Popen made
            self.process.wait()
        os.close(self.replies)
        self.process = None


# --- what counts as a clean ending -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Known:
    """A reader's misbehaviour found by this fuzzer and not fixed yet: tolerated in the fuzz
    tests, reproduced by a strict xfail test."""

    name: str
    outcome: str  # "other", "crash" or "hang"
    pattern: str  # a regular expression searched in "type: message"

    def matches(self, result: dict) -> bool:
        text = f"{result.get('type', '')}: {result.get('message', '')}"
        return result["outcome"] == self.outcome and re.search(self.pattern, text) is not None


KNOWN: list[Known] = []  # none today: the two .pth findings of the first runs are fixed


def problem(result: dict) -> str | None:
    """Why `result` is not a clean ending, or None."""
    outcome = result["outcome"]
    if outcome == "ConversionError":
        message = result["message"]
        if not message.strip() or "\n" in message:
            return f"a ConversionError whose message is not one line: {message!r}"
    elif outcome != "ok":
        text = f"{outcome}: {result.get('type', '')} {result.get('message', '')}"
        return text + "".join(f"\n{result[k]}" for k in ("traceback", "log") if k in result)
    if result.get("peak_growth", 0) > MEMORY_GROWTH:
        return f"the read raised peak memory by {result['peak_growth']:,} bytes"
    if result.get("seconds", 0) > READ_TIMEOUT:
        return f"the read took {result['seconds']:.1f} s"
    return None


class Fuzz:
    """Writes mutated files into one directory and reads them with the children."""

    def __init__(self, base: Path, readers: dict[str, Reader]):
        self.base, self.readers = base, readers
        self.failures = base / "failures"
        self.failures.mkdir(exist_ok=True)

    def check(self, kind: str, path: Path, mutation: object) -> None:
        result = self.readers[kind].read(path)
        if LOG:
            with open(LOG, "a") as log:
                log.write(json.dumps({"file": path.name, "mutation": repr(mutation), **result}))
                log.write("\n")
        note(f"{path.name}: {result['outcome']} {result.get('message', '')[:300]}")
        why = problem(result)
        if why is None:
            return
        known = next((k for k in KNOWN if k.matches(result)), None)
        if known is not None:
            note(f"known finding: {known.name}")
            return
        kept = self.failures / f"{len(list(self.failures.iterdir()))}-{path.name}"
        if path.is_dir():
            shutil.copytree(path, kept)
        else:
            shutil.copy(path, kept)
        pytest.fail(
            f"reading {path.name} mutated by {mutation!r}\nended in {why}\nthe file is kept "
            f"at {kept}",
            pytrace=False,
        )
