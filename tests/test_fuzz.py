"""Random mutations of small valid files: every reader ends in a ConversionError or a read.

Hypothesis mutates a tiny model's `.pth`, `.safetensors`, Hugging Face directory,
`.weights.h5` and `.keras` files: truncations, flipped, overwritten, inserted and deleted
bytes; the fields of the zip records of `.pth` and `.keras` (versions, sizes, offsets, CRCs,
counts, zip64 records), their members (dropped, renamed, duplicated, deflated, added,
rewritten with their CRCs right); the pickle inside a `.pth` (its integers, which are shapes,
strides, offsets and storage sizes; its strings; its globals, which are the storage dtypes;
single opcodes); the state_dict saved (dtypes, shapes, broadcast and strided views, sparse and
meta tensors, things that are not tensors, wrappers, pickle protocol 4, the legacy format);
safetensors' 8-byte header length and its JSON header (dtypes, shapes, data offsets); the JSON
of config.json and metadata.json (objects Keras would deserialize included); the datasets of
an HDF5 weights file (dtypes, shapes, filters, links, external storage, virtual datasets,
cycles, attributes) before its bytes are mutated.

Each read runs in a long-lived child process (one for the PyTorch readers, one with Keras):
the child reports what the reader raised, how long it took and how far its peak resident
memory rose; the parent gives each read a time limit and watches the child's exit status, so
a hang or a crash (a segfault in h5py, an abort) is a failure of its own, and a fresh child
takes the next read. The child's address space is capped (RLIMIT_AS) once it is warm, so a
runaway allocation ends in MemoryError rather than on the machine.

The default run (`make test`) is a fixed, derandomized slice of about half a minute. The
long run draws new inputs every time:

    CONVNEXT_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/test_fuzz.py   # make fuzz

(2000 examples for each file kind, about 45 minutes; add `--hypothesis-seed=N` to repeat
one run, CONVNEXT_FUZZ_LOG=FILE to keep every read's outcome). A failure names the mutations
Hypothesis shrank it to and keeps the mutated file for reproduction. Readers that misbehave
today are listed in KNOWN: the fuzz tests tolerate them, and each has a strict xfail
reproduction at the end, which turns into a failure once the reader is fixed. The harness
itself is tested last: a child that crashes, hangs, raises or fills memory is seen to.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import os
import pickletools
import re
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
import traceback
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

# The children are POSIX processes (pass_fds, process groups, select on pipes).
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")

ROOT = Path(__file__).resolve().parents[1]
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
                [sys.executable, "-c", f"from tests.test_fuzz import serve; serve({self.kind!r})"],
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


# --- byte mutations ---------------------------------------------------------------------------

# Offsets are drawn large and taken modulo the length; half of them fall in the first 512
# bytes, where the headers are.
OFFSETS = st.one_of(st.integers(0, 511), st.integers(0, 1 << 20))


@dataclasses.dataclass(frozen=True)
class Truncate:
    at: int

    def __call__(self, data: bytes) -> bytes:
        return data[: self.at % max(len(data), 1)]


@dataclasses.dataclass(frozen=True)
class Flip:
    at: int
    mask: int

    def __call__(self, data: bytes) -> bytes:
        if not data:
            return data
        i = self.at % len(data)
        return data[:i] + bytes([data[i] ^ self.mask]) + data[i + 1 :]


@dataclasses.dataclass(frozen=True)
class Overwrite:
    at: int
    new: bytes

    def __call__(self, data: bytes) -> bytes:
        i = self.at % max(len(data), 1)
        return data[:i] + self.new + data[i + len(self.new) :]


@dataclasses.dataclass(frozen=True)
class Replace:
    new: bytes

    def __call__(self, data: bytes) -> bytes:
        return self.new


@dataclasses.dataclass(frozen=True)
class Insert:
    at: int
    new: bytes

    def __call__(self, data: bytes) -> bytes:
        i = self.at % (len(data) + 1)
        return data[:i] + self.new + data[i:]


@dataclasses.dataclass(frozen=True)
class Delete:
    at: int
    length: int

    def __call__(self, data: bytes) -> bytes:
        i = self.at % max(len(data), 1)
        return data[:i] + data[i + self.length :]


INTERESTING_BYTES = st.sampled_from(
    [b"\x00" * 8, b"\xff" * 8, b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\x01", b"{", b"["]
)
BYTE_OPS = st.one_of(
    st.builds(Truncate, OFFSETS),
    st.builds(Flip, OFFSETS, st.integers(1, 255)),
    st.builds(Overwrite, OFFSETS, st.binary(min_size=1, max_size=16) | INTERESTING_BYTES),
    st.builds(Insert, OFFSETS, st.binary(min_size=1, max_size=64) | INTERESTING_BYTES),
    st.builds(Delete, OFFSETS, st.integers(1, 256)),
)

# Values for fixed-width fields: the edges of each width, and anything.
FIELD_VALUES = st.one_of(
    st.sampled_from([0, 1, 2, 7, 8, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 32]),
    st.sampled_from([(1 << 63) - 1, 1 << 63, (1 << 64) - 1]),
    st.integers(0, (1 << 64) - 1),
)


# --- JSON mutations (config.json, metadata.json, safetensors' header) -------------------------


def json_nodes(value: object, path: tuple = ()) -> list[tuple]:
    """Every node's path in `value`, in pre-order (the root is ())."""
    paths = [path]
    if isinstance(value, dict):
        for key in value:
            paths += json_nodes(value[key], (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            paths += json_nodes(item, (*path, i))
    return paths


def json_parent(root: object, path: tuple) -> object:
    for step in path[:-1]:
        root = root[step]
    return root


@dataclasses.dataclass(frozen=True)
class JsonSet:
    """Replace the `node`-th node (pre-order, modulo the count) with `value`."""

    node: int
    value: object

    def edit(self, root: object) -> object:
        paths = json_nodes(root)
        path = paths[self.node % len(paths)]
        value = copy.deepcopy(self.value)  # never the example's own object: edits follow
        if not path:
            return value
        json_parent(root, path)[path[-1]] = value
        return root


@dataclasses.dataclass(frozen=True)
class JsonDelete:
    node: int

    def edit(self, root: object) -> object:
        paths = json_nodes(root)[1:]
        if paths:
            path = paths[self.node % len(paths)]
            del json_parent(root, path)[path[-1]]
        return root


@dataclasses.dataclass(frozen=True)
class JsonRename:
    """Rename the key of the `node`-th node that sits in an object."""

    node: int
    key: str

    def edit(self, root: object) -> object:
        paths = [p for p in json_nodes(root)[1:] if isinstance(json_parent(root, p), dict)]
        if paths:
            path = paths[self.node % len(paths)]
            parent = json_parent(root, path)
            parent[self.key] = parent.pop(path[-1])
        return root


@dataclasses.dataclass(frozen=True)
class JsonEdits:
    """JSON edits applied to bytes holding a JSON document (a no-op if they no longer do)."""

    edits: tuple

    def __call__(self, data: bytes) -> bytes:
        try:
            root = json.loads(data)
        except (ValueError, RecursionError):
            return data
        for edit in self.edits:
            root = edit.edit(root)
        return json.dumps(root).encode()


INTERESTING_STRINGS = st.sampled_from(
    [
        "",
        "ConvNeXt",
        "ConvNeXtBackbone",
        "ConvNeXtIsotropic",
        "convnext_tf>ConvNeXt",
        "convnext_tf.model",
        "convnext_torch.model",
        "keras",
        "keras.layers",
        "Lambda",
        "Dense",
        "DTypePolicy",
        "float16",
        "float64",
        "bfloat16",
        "mixed_float16",
        "int8",
        "builtins",
        "os",
        "F32",
        "F16",
        "I64",
        "../model.weights.h5",
    ]
)
INTERESTING_NUMBERS = st.sampled_from(
    [0, 1, -1, 3, 8, 1000, 2**31, 2**32 + 8, 2**63, 2**64, 10**12, 1e-6, 1e308, float("nan")]
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    INTERESTING_NUMBERS,
    st.integers(-(2**70), 2**70),
    st.floats(),
    INTERESTING_STRINGS,
    st.text(max_size=10),
)
# Objects a Keras config may name (safe_mode must refuse the dangerous kinds; nothing here would
# do harm if it ran: print, an empty lambda).
KERAS_OBJECTS = st.sampled_from(
    [
        {"module": "builtins", "class_name": "print", "config": {}, "registered_name": None},
        {"module": "keras.layers", "class_name": "Lambda", "config": {"function": "print"}},
        {
            "class_name": "__lambda__",
            "config": {
                "code": "",  # no bytecode: safe_mode must refuse the lambda before decoding
                "defaults": None,
                "closure": None,
            },
        },
        {"class_name": "__tuple__", "config": {"value": [1, 2]}},
        {"class_name": "__numpy__", "config": {"value": [1.0], "dtype": "float32"}},
        {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "mixed_float16"}},
        {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "int8"}},
        {"module": "convnext_tf.model", "class_name": "ConvNeXt", "config": {}},
        {"module": "convnext_torch.model", "class_name": "ConvNeXt", "config": {}},
    ]
)


def json_containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    keys = INTERESTING_STRINGS | st.text(max_size=6)
    return st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=4)


JSON_VALUES = st.recursive(JSON_SCALARS | KERAS_OBJECTS, json_containers, max_leaves=10)
JSON_EDIT = st.one_of(
    st.builds(JsonSet, st.integers(0, 1000), JSON_VALUES),
    st.builds(JsonDelete, st.integers(0, 1000)),
    st.builds(JsonRename, st.integers(0, 1000), INTERESTING_STRINGS | st.text(max_size=6)),
)
JSON_EDITS = st.builds(JsonEdits, st.lists(JSON_EDIT, min_size=1, max_size=3).map(tuple))


# --- zip mutations (.pth, .keras) --------------------------------------------------------------

# signature -> field -> (offset, struct format), for the records of a zip file
ZIP_RECORDS = {
    "local": (
        b"PK\x03\x04",
        {
            "version": (4, "H"),
            "flags": (6, "H"),
            "method": (8, "H"),
            "crc": (14, "I"),
            "compressed_size": (18, "I"),
            "size": (22, "I"),
            "name_length": (26, "H"),
            "extra_length": (28, "H"),
        },
    ),
    "descriptor": (
        b"PK\x07\x08",
        {"crc": (4, "I"), "compressed_size": (8, "Q"), "size": (16, "Q")},
    ),
    "central": (
        b"PK\x01\x02",
        {
            "version_made": (4, "H"),
            "version_needed": (6, "H"),
            "flags": (8, "H"),
            "method": (10, "H"),
            "crc": (16, "I"),
            "compressed_size": (20, "I"),
            "size": (24, "I"),
            "name_length": (28, "H"),
            "extra_length": (30, "H"),
            "comment_length": (32, "H"),
            "disk": (34, "H"),
            "local_offset": (42, "I"),
        },
    ),
    "zip64_end": (
        b"PK\x06\x06",
        {
            "record_size": (4, "Q"),
            "disk": (16, "I"),
            "entries_here": (24, "Q"),
            "entries": (32, "Q"),
            "directory_size": (40, "Q"),
            "directory_offset": (48, "Q"),
        },
    ),
    "zip64_locator": (
        b"PK\x06\x07",
        {"disk": (4, "I"), "end_offset": (8, "Q"), "disks": (16, "I")},
    ),
    "end": (
        b"PK\x05\x06",
        {
            "disk": (4, "H"),
            "directory_disk": (6, "H"),
            "entries_here": (8, "H"),
            "entries": (10, "H"),
            "directory_size": (12, "I"),
            "directory_offset": (16, "I"),
            "comment_length": (20, "H"),
        },
    ),
}
ZIP_FIELDS = [(record, field) for record, (_, fields) in ZIP_RECORDS.items() for field in fields]


@dataclasses.dataclass(frozen=True)
class ZipField:
    """Set (or, with `add`, shift) one field of the `index`-th record of a kind, found by its
    signature."""

    record: str
    field: str
    index: int
    value: int
    add: bool = False

    def __call__(self, data: bytes) -> bytes:
        signature, fields = ZIP_RECORDS[self.record]
        found = [m.start() for m in re.finditer(re.escape(signature), data)]
        if not found:
            return data
        offset, code = fields[self.field]
        at = found[self.index % len(found)] + offset
        size = struct.calcsize("<" + code)
        if at + size > len(data):
            return data
        old = struct.unpack_from("<" + code, data, at)[0]
        value = (old + self.value if self.add else self.value) % (1 << (8 * size))
        return data[:at] + struct.pack("<" + code, value) + data[at + size :]


ZIP_FIELD_OPS = st.builds(
    lambda record_field, index, value, add: ZipField(*record_field, index, value, add),
    st.sampled_from(ZIP_FIELDS),
    st.integers(0, 100),
    FIELD_VALUES,
    st.just(False),
) | st.builds(
    lambda record_field, index, value, add: ZipField(*record_field, index, value, add),
    st.sampled_from(ZIP_FIELDS),
    st.integers(0, 100),
    st.integers(-70, 70),
    st.just(True),
)


def unzip(data: bytes) -> list[tuple[str, int, bytes]] | None:
    """The members of a zip archive as (name, compression, content), None if unreadable."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return [(i.filename, i.compress_type, archive.read(i)) for i in archive.infolist()]
    except Exception:  # zipfile raises many types for a damaged archive
        return None


def rezip(members: list[tuple[str, int, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        with zipfile.ZipFile(buffer, "w") as archive:
            for name, compression, content in members:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = compression
                archive.writestr(info, content)
    return buffer.getvalue()


def member_index(members: list, name: str) -> int | None:
    """The member called `name`, or `name` inside the archive's folder (torch's `archive/`)."""
    return next(
        (i for i, m in enumerate(members) if m[0] == name or m[0].endswith("/" + name)), None
    )


@dataclasses.dataclass(frozen=True)
class Member:
    """Rewrite one member through `ops` and pack the archive again, CRCs right (so that the
    damage reaches the member's reader, not the zip's checks)."""

    name: str
    ops: tuple

    def __call__(self, data: bytes) -> bytes:
        members = unzip(data)
        i = None if members is None else member_index(members, self.name)
        if i is None:
            return data
        name, compression, content = members[i]
        for op in self.ops:
            content = op(content)
        members[i] = (name, compression, content)
        return rezip(members)


@dataclasses.dataclass(frozen=True)
class MemberChange:
    """Drop, duplicate, rename or compress one member, or add a new one."""

    name: str
    change: str  # "drop", "duplicate", "rename", "deflate", "add"
    new: str = ""
    content: bytes = b""

    def __call__(self, data: bytes) -> bytes:
        members = unzip(data)
        i = None if members is None else member_index(members, self.name)
        if i is None:
            return data
        name, compression, content = members[i]
        folder = name.rpartition("/")[0] + "/" if "/" in name else ""
        if self.change == "drop":
            del members[i]
        elif self.change == "duplicate":
            members.append((name, compression, self.content))
        elif self.change == "rename":
            members[i] = (folder + self.new, compression, content)
        elif self.change == "deflate":
            members[i] = (name, zipfile.ZIP_DEFLATED, content)
        else:
            members.insert(i, (folder + self.new, zipfile.ZIP_STORED, self.content))
        return rezip(members)


def member_changes(names: list[str]) -> st.SearchStrategy:
    return st.builds(
        MemberChange,
        st.sampled_from(names),
        st.sampled_from(["drop", "duplicate", "rename", "deflate", "add"]),
        st.sampled_from(names) | st.text("abcdefghij./_0123456789", max_size=12),
        st.binary(max_size=64),
    )


# --- .pth: the state_dict saved, the pickle, the zip ----------------------------------------


@dataclasses.dataclass(frozen=True)
class TensorEdit:
    """Replace the `index`-th tensor (modulo the count) of the state_dict before torch.save."""

    index: int
    change: str
    arg: object = None

    def apply(self, state: dict) -> object:
        import torch

        keys = list(state)
        key = keys[self.index % len(keys)]
        value = state[key]
        c, arg = self.change, self.arg
        if c == "dtype":
            state[key] = value.to(getattr(torch, arg))
        elif c == "shape":
            state[key] = torch.zeros(arg)
        elif c == "expand":
            state[key] = torch.zeros(1).expand(*arg)
        elif c == "transpose" and value.dim() >= 2:
            state[key] = value.transpose(0, -1)
        elif c == "slice":
            state[key] = torch.zeros(value.numel() + 7)[7:].view(value.shape)
        elif c == "sparse":
            state[key] = value.reshape(value.shape[0], -1).to_sparse()
        elif c == "meta":
            state[key] = torch.empty(value.shape, device="meta")
        elif c == "parameter":
            state[key] = torch.nn.Parameter(value)
        elif c == "value":
            state[key] = arg
        elif c == "drop":
            del state[key]
        elif c == "rename":
            state[arg] = state.pop(key)
        elif c == "add":
            state[arg] = value.clone()
        return state


@dataclasses.dataclass(frozen=True)
class Wrap:
    """Wrap the state_dict as a training checkpoint does, or not quite."""

    how: str

    def apply(self, state: dict) -> object:
        return {
            "model": lambda: {"model": state, "epoch": 1},
            "state_dict": lambda: {"state_dict": state},
            "ema": lambda: {"model_ema": state},
            "empty_model": lambda: {"model": {}, "state_dict": state},
            "prefix": lambda: {f"module.{k}": v for k, v in state.items()},
            "backbone": lambda: {f"backbone.{k}": v for k, v in state.items()},
            "list": lambda: [state],
            "nested": lambda: {"model": {"model": state}},
            "int_key": lambda: {**state, 3: next(iter(state.values()))},
        }[self.how]()


DTYPES = [
    "float16",
    "bfloat16",
    "float64",
    "int8",
    "uint8",
    "int32",
    "int64",
    "bool",
    "complex64",
    "float8_e4m3fn",
    "float8_e5m2",
]
SHAPES = st.lists(st.integers(0, 9), max_size=5).map(tuple)
NOT_TENSORS = st.sampled_from([None, 1, 1.5, "x", b"x", (1, 2), [1.0], {"a": 1}, True])
STATE_DICT_EDITS = st.one_of(
    st.builds(TensorEdit, st.integers(0, 99), st.just("dtype"), st.sampled_from(DTYPES)),
    st.builds(TensorEdit, st.integers(0, 99), st.just("shape"), SHAPES),
    st.builds(
        TensorEdit,
        st.integers(0, 99),
        st.just("expand"),
        st.sampled_from([(20000, 20000), (10**6, 10**6), (8,), (3, 8)]),
    ),
    st.builds(
        TensorEdit,
        st.integers(0, 99),
        st.sampled_from(["transpose", "slice", "sparse", "meta", "parameter", "drop"]),
    ),
    st.builds(TensorEdit, st.integers(0, 99), st.just("value"), NOT_TENSORS),
    st.builds(
        TensorEdit,
        st.integers(0, 99),
        st.sampled_from(["rename", "add"]),
        st.sampled_from(["", "stem.weight", "head.weight", "stages.9.0.gamma", "norm"])
        | st.text(max_size=12),
    ),
    st.builds(
        Wrap,
        st.sampled_from(
            ["model", "state_dict", "ema", "empty_model", "prefix", "backbone", "list", "nested"]
        ),
    ),
    st.just(Wrap("int_key")),
)
# torch.save options: its default, the pickle protocols the weights-only reader refuses, the
# legacy (non-zip) format.
SAVE_MODES = st.sampled_from(["default", "default", "default", "protocol4", "legacy"])


def pickle_ops(data: bytes) -> list[tuple]:
    """(opcode name, argument, start, end) for each opcode of a pickle; [] if it is damaged."""
    try:
        ops = list(pickletools.genops(data))
    except Exception:  # pickletools raises ValueError and others on damage
        return []
    ends = [pos for _, _, pos in ops[1:]] + [len(data)]
    return [(op.name, arg, pos, end) for (op, arg, pos), end in zip(ops, ends, strict=True)]


def pickle_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    body = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(body)]) + body


@dataclasses.dataclass(frozen=True)
class PickleEdit:
    """Replace the `index`-th opcode of a kind in a pickle: an integer (shapes, strides,
    storage offsets and sizes), a string (keys, storage names, devices), a global (storage
    dtypes, rebuild functions); or delete or repeat one opcode."""

    kind: str  # "int", "str", "global", "delete", "repeat"
    index: int
    value: object = None

    KINDS = {
        "int": ("BININT", "BININT1", "BININT2", "LONG1", "INT"),
        "str": ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE"),
        "global": ("GLOBAL",),
    }

    def __call__(self, data: bytes) -> bytes:
        ops = pickle_ops(data)
        if self.kind in self.KINDS:
            ops = [op for op in ops if op[0] in self.KINDS[self.kind]]
        if not ops:
            return data
        _, _, start, end = ops[self.index % len(ops)]
        if self.kind == "int":
            new = pickle_int(self.value)
        elif self.kind == "str":
            text = str(self.value).encode("utf-8", "surrogatepass")
            new = b"X" + struct.pack("<I", len(text)) + text
        elif self.kind == "global":
            new = b"c" + str(self.value).replace(" ", "\n", 1).encode() + b"\n"
        elif self.kind == "delete":
            new = b""
        else:
            new = data[start:end] * 2
        return data[:start] + new + data[end:]


GLOBALS = [
    f"torch {name}"
    for name in (
        "HalfStorage",
        "BFloat16Storage",
        "DoubleStorage",
        "LongStorage",
        "IntStorage",
        "ByteStorage",
        "BoolStorage",
        "CharStorage",
        "ComplexFloatStorage",
        "QInt8Storage",
        "UntypedStorage",
        "Size",
        "float32",
        "device",
    )
] + [
    "torch._utils _rebuild_tensor_v2",
    "torch._utils _rebuild_parameter",
    "torch._utils _rebuild_sparse_tensor",
    "torch._utils _rebuild_qtensor",
    "torch._utils _rebuild_meta_tensor_no_storage",
    "torch._utils _rebuild_wrapper_subclass",
    "collections OrderedDict",
    "builtins dict",
    "builtins getattr",
    "argparse Namespace",
    "os system",
    "numpy.core.multiarray _reconstruct",
]
PICKLE_EDITS = st.one_of(
    st.builds(
        PickleEdit,
        st.just("int"),
        st.integers(0, 2000),
        st.one_of(
            st.integers(-2, 70),
            st.sampled_from([255, 256, 65535, 2**31 - 1, 2**31, 2**32, 2**62, 2**63, -(2**63)]),
            st.integers(-(2**70), 2**70),
        ),
    ),
    st.builds(
        PickleEdit,
        st.just("str"),
        st.integers(0, 2000),
        st.sampled_from(["", "0", "55", "56", "999", "cuda", "meta", "cpu", "storage", ".."])
        | st.text(max_size=8),
    ),
    st.builds(PickleEdit, st.just("global"), st.integers(0, 200), st.sampled_from(GLOBALS)),
    st.builds(PickleEdit, st.sampled_from(["delete", "repeat"]), st.integers(0, 5000)),
)
PTH_MEMBERS = ["data.pkl", "version", "byteorder", ".format_version", ".storage_alignment"]
PTH_MEMBERS += [".data/serialization_id", "data/0", "data/1", "data/54", "data/55"]
PTH_OPS = st.one_of(
    BYTE_OPS,
    ZIP_FIELD_OPS,
    st.builds(
        Member, st.just("data.pkl"), st.lists(PICKLE_EDITS, min_size=1, max_size=3).map(tuple)
    ),
    st.builds(
        Member, st.sampled_from(PTH_MEMBERS), st.lists(BYTE_OPS, min_size=1, max_size=2).map(tuple)
    ),
    st.builds(
        Member,
        st.sampled_from(["version", "byteorder", ".format_version", ".storage_alignment"]),
        st.tuples(
            st.builds(
                Replace,
                st.sampled_from([b"big", b"little", b"0", b"1", b"2\n", b"99\n", b"-1", b"\xff"]),
            )
        ),
    ),
    member_changes(PTH_MEMBERS),
)


@dataclasses.dataclass(frozen=True)
class PthExample:
    edit: object  # a TensorEdit or Wrap, or None
    save: str
    ops: tuple


PTH_EXAMPLES = st.builds(
    PthExample,
    st.none() | STATE_DICT_EDITS,
    SAVE_MODES,
    st.lists(PTH_OPS, max_size=3).map(tuple),
)


# --- .safetensors ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HeaderLength:
    """Set (or shift) safetensors' 8-byte little-endian header length."""

    value: int
    add: bool = False

    def __call__(self, data: bytes) -> bytes:
        if len(data) < 8:
            return data
        old = struct.unpack_from("<Q", data)[0]
        value = (old + self.value if self.add else self.value) % (1 << 64)
        return struct.pack("<Q", value) + data[8:]


@dataclasses.dataclass(frozen=True)
class Header:
    """Rewrite safetensors' JSON header through `ops` (JSON edits or byte ops), its length
    field made to match (as a writer that got the header wrong would)."""

    ops: tuple

    def __call__(self, data: bytes) -> bytes:
        if len(data) < 8:
            return data
        length = struct.unpack_from("<Q", data)[0]
        if length > len(data) - 8:
            return data
        header, rest = data[8 : 8 + length], data[8 + length :]
        for op in self.ops:
            header = op(header)
        return struct.pack("<Q", len(header)) + header + rest


@dataclasses.dataclass(frozen=True)
class TensorField:
    """Set one field (dtype, shape, data_offsets) of the `index`-th tensor of the header."""

    index: int
    field: str
    value: object

    def edit(self, header: object) -> object:
        if not isinstance(header, dict):
            return header
        names = sorted(k for k in header if k != "__metadata__")
        if names and isinstance(header[names[self.index % len(names)]], dict):
            header[names[self.index % len(names)]][self.field] = self.value
        return header


ST_DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64"]
ST_DTYPES += ["BOOL", "F8_E4M3", "F8_E5M2", "C64", "F4", "E8M0", "f32", "", "float32"]
TENSOR_FIELDS = st.one_of(
    st.builds(TensorField, st.integers(0, 99), st.just("dtype"), st.sampled_from(ST_DTYPES)),
    st.builds(
        TensorField,
        st.integers(0, 99),
        st.just("shape"),
        st.lists(st.integers(-1, 9) | st.sampled_from([2**31, 2**32, 2**63, 2**64]), max_size=5)
        | JSON_SCALARS,
    ),
    st.builds(
        TensorField,
        st.integers(0, 99),
        st.just("data_offsets"),
        st.lists(
            st.integers(-1, 40000) | st.sampled_from([2**32, 2**63 - 1, 2**64]),
            min_size=0,
            max_size=3,
        )
        | JSON_SCALARS,
    ),
)
ST_OPS = st.one_of(
    BYTE_OPS,
    st.builds(HeaderLength, FIELD_VALUES),
    st.builds(HeaderLength, st.integers(-64, 64), st.just(True)),
    st.builds(
        Header,
        st.lists(st.builds(JsonEdits, st.tuples(TENSOR_FIELDS)), min_size=1, max_size=3).map(tuple),
    ),
    st.builds(Header, st.tuples(JSON_EDITS)),
    st.builds(Header, st.lists(BYTE_OPS, min_size=1, max_size=2).map(tuple)),
)


@dataclasses.dataclass(frozen=True)
class SafetensorsExample:
    edit: object  # a TensorEdit of the state_dict saved, or None
    ops: tuple


# The edits safetensors can save (dense tensors only); the header edits reach the rest.
SAVABLE_EDITS = st.one_of(
    st.builds(TensorEdit, st.integers(0, 99), st.just("dtype"), st.sampled_from(DTYPES)),
    st.builds(TensorEdit, st.integers(0, 99), st.just("shape"), SHAPES),
    st.builds(TensorEdit, st.integers(0, 99), st.sampled_from(["drop", "transpose"])),
    st.builds(
        TensorEdit,
        st.integers(0, 99),
        st.sampled_from(["rename", "add"]),
        st.sampled_from(["", "stem.weight", "head.weight", "__metadata__"]) | st.text(max_size=12),
    ),
)
ST_EXAMPLES = st.builds(
    SafetensorsExample, st.none() | SAVABLE_EDITS, st.lists(ST_OPS, max_size=3).map(tuple)
)


# --- .weights.h5 and .keras -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class H5Edit:
    """One change to an HDF5 weights file made with h5py before its bytes are mutated: the
    `index`-th dataset (modulo the count) retyped, reshaped, deleted, renamed, compressed,
    made a group or a link, given a sibling or an attribute."""

    index: int
    change: str
    arg: object = None

    def apply(self, f) -> None:  # f: an h5py.File open for writing
        import h5py
        import numpy as np

        names: list[str] = []
        f.visititems(
            lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None
        )
        if not names:
            return
        name = names[self.index % len(names)]
        data, group = f[name][()], f[name].parent
        base = name.rpartition("/")[2]
        c, arg = self.change, self.arg
        if c == "dtype":
            replace(f, name, data.astype(arg))
        elif c == "shape":
            replace(f, name, np.zeros(arg, dtype=data.dtype))
        elif c == "scalar":
            replace(f, name, np.float32(1.5))
        elif c == "empty":
            del f[name]
            group.create_dataset(base, data=h5py.Empty("f4"))
        elif c == "delete":
            del f[name]
        elif c == "rename":
            group.move(base, str(arg))
        elif c == "add":
            group.create_dataset(str(arg), data=np.zeros((2,), dtype="f4"))
        elif c == "group":
            del f[name]
            group.create_group(base)
        elif c == "compress":
            del f[name]
            if data.ndim:
                group.create_dataset(base, data=data, chunks=True, **arg)
            else:
                group.create_dataset(base, data=data)
        elif c == "soft_link":
            del f[name]
            group[base] = h5py.SoftLink(str(arg))
        elif c == "external_link":  # another file's dataset of the same name
            del f[name]
            group[base] = h5py.ExternalLink(str(arg), "/" + name)
        elif c == "external_storage":  # the values are the bytes of another file
            del f[name]
            group.create_dataset(
                base, shape=data.shape, dtype=data.dtype, external=[(str(arg), 0, data.nbytes)]
            )
        elif c == "virtual":  # the values mapped from another file's dataset of the same name
            del f[name]
            layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
            layout[...] = h5py.VirtualSource(str(arg), name, shape=data.shape)
            group.create_virtual_dataset(base, layout, fillvalue=7)
        elif c == "cycle":  # a hard link from the dataset's place to the root: a cycle
            del f[name]
            group[base] = f["/"]
        elif c == "declare":  # a shape of fill values: declared, never stored
            del f[name]
            group.create_dataset(base, shape=arg, dtype=data.dtype)
        elif c == "padding":  # one more array at the root: array counts match after a removal
            f.create_dataset(f"padding{arg}", data=np.zeros(1, "f4"))
        elif c == "attribute":
            group.attrs[str(arg)] = "x"
        elif c == "root_attribute":
            f.attrs[str(arg)] = np.arange(3)


def replace(f, name: str, data: object) -> None:
    del f[name]
    f.create_dataset(name, data=data)


@dataclasses.dataclass(frozen=True)
class H5Edits:
    """Edits made with h5py to a valid HDF5 file's bytes (only ever a valid one: h5py runs in
    the test process, which must not meet a damaged file)."""

    edits: tuple

    def __call__(self, data: bytes) -> bytes:
        import h5py

        buffer = io.BytesIO(data)
        with h5py.File(buffer, "r+") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's ComplexWarning on a complex -> real cast
            for edit in self.edits:
                with contextlib.suppress(Exception):  # an edit that does not apply is skipped
                    edit.apply(f)
        return buffer.getvalue()


H5_NAMES = st.sampled_from(["0", "1", "2", "vars", "layers", "x", "0/0"]) | st.text(
    "abc012_", min_size=1, max_size=6
)
H5_EDIT = st.one_of(
    st.builds(
        H5Edit,
        st.integers(0, 99),
        st.just("dtype"),
        st.sampled_from(["f2", "f8", "i1", "i4", "i8", "u1", "?", "c8", "S4"]),
    ),
    st.builds(H5Edit, st.integers(0, 99), st.just("shape"), SHAPES),
    st.builds(
        H5Edit,
        st.integers(0, 99),
        st.sampled_from(["scalar", "empty", "delete", "group"]),
    ),
    st.builds(
        H5Edit, st.integers(0, 99), st.sampled_from(["rename", "add", "attribute"]), H5_NAMES
    ),
    st.builds(H5Edit, st.integers(0, 99), st.just("root_attribute"), H5_NAMES),
    st.builds(
        H5Edit,
        st.integers(0, 99),
        st.just("compress"),
        st.sampled_from(
            [
                {"compression": "gzip"},
                {"compression": "lzf"},
                {"shuffle": True, "fletcher32": True},
                {"scaleoffset": 3},
            ]
        ),
    ),
    st.builds(
        H5Edit,
        st.integers(0, 99),
        st.just("soft_link"),
        st.sampled_from(["/", "/missing", "/downsample_layers", "."]),
    ),
    st.builds(
        H5Edit,
        st.integers(0, 99),
        st.sampled_from(["external_link", "external_storage", "virtual"]),
        st.sampled_from(["/nonexistent.h5", "/dev/zero", "/proc/self/status", "."]),
    ),
    st.builds(H5Edit, st.integers(0, 99), st.just("cycle")),
    st.builds(  # up to 10^12 elements declared in a file of kilobytes
        H5Edit,
        st.integers(0, 99),
        st.just("declare"),
        st.lists(st.sampled_from([1, 8, 1000, 20000, 10**6]), min_size=1, max_size=3).map(tuple),
    ),
    st.builds(H5Edit, st.integers(0, 99), st.just("padding"), st.integers(0, 3)),
)
H5_EDITS = st.lists(H5_EDIT, min_size=1, max_size=3).map(lambda edits: H5Edits(tuple(edits)))


@dataclasses.dataclass(frozen=True)
class H5Example:
    edits: object  # an H5Edits or None
    ops: tuple


H5_EXAMPLES = st.builds(H5Example, st.none() | H5_EDITS, st.lists(BYTE_OPS, max_size=3).map(tuple))

KERAS_MEMBERS = ["config.json", "metadata.json", "model.weights.h5"]
KERAS_OPS = st.one_of(
    BYTE_OPS,
    ZIP_FIELD_OPS,
    st.builds(Member, st.sampled_from(["config.json", "metadata.json"]), st.tuples(JSON_EDITS)),
    st.builds(
        Member,
        st.sampled_from(KERAS_MEMBERS),
        st.lists(BYTE_OPS, min_size=1, max_size=2).map(tuple),
    ),
    member_changes(KERAS_MEMBERS),
)


@dataclasses.dataclass(frozen=True)
class KerasExample:
    weights: object  # H5Edits for the weights member, or None
    ops: tuple


KERAS_EXAMPLES = st.builds(
    KerasExample, st.none() | H5_EDITS, st.lists(KERAS_OPS, max_size=3).map(tuple)
)


@dataclasses.dataclass(frozen=True)
class HfExample:
    config: tuple  # ops on config.json's bytes
    weights: tuple  # ops on model.safetensors
    drop_config: bool


HF_EXAMPLES = st.builds(
    HfExample,
    st.lists(JSON_EDITS | BYTE_OPS, max_size=2).map(tuple),
    st.lists(ST_OPS, max_size=2).map(tuple),
    st.booleans(),
)


# --- the valid seed files ---------------------------------------------------------------------


def deterministic_values(shapes: list[tuple[int, ...]]) -> list:
    import numpy as np

    rng = np.random.default_rng(20240611)
    return [rng.standard_normal(shape).astype("float32") * 0.1 for shape in shapes]


def set_zip_member(data: bytes, name: str, content: bytes) -> bytes:
    """Replace a stored member's bytes in place, same length, its CRCs updated (torch writes
    a random serialization_id; the seed must be the same bytes on every run)."""
    out = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(name))
    assert info.compress_size == len(content) and info.compress_type == zipfile.ZIP_STORED
    at = info.header_offset
    name_length, extra_length = struct.unpack_from("<HH", out, at + 26)
    start = at + 30 + name_length + extra_length
    out[start : start + len(content)] = content
    crc = zlib.crc32(content)
    struct.pack_into("<I", out, at + 14, crc)
    after = start + len(content)
    if out[after : after + 4] == b"PK\x07\x08":
        struct.pack_into("<I", out, after + 4, crc)
    for match in re.finditer(re.escape(b"PK\x01\x02"), bytes(out)):
        here = match.start()
        length = struct.unpack_from("<H", out, here + 28)[0]
        if out[here + 46 : here + 46 + length] == info.filename.encode():
            struct.pack_into("<I", out, here + 16, crc)
    with zipfile.ZipFile(io.BytesIO(bytes(out))) as archive:
        assert archive.testzip() is None
    return bytes(out)


class Seeds:
    """The valid files the mutations start from, and the state_dict they hold. Not a
    dataclass: Hypothesis prints a failing example's fixtures, a dataclass field by field."""

    FIELDS = ("state_dict", "pth", "safetensors", "weights_h5", "keras", "hf_config")
    FIELDS += ("hf_safetensors",)

    def __init__(self, *values: object):
        for name, value in zip(self.FIELDS, values, strict=True):
            setattr(self, name, value)

    def __repr__(self) -> str:
        return "Seeds(...)"


def make_seeds(work: Path) -> Seeds:
    import torch
    from safetensors.torch import save as save_safetensors

    import convnext_tf
    import convnext_torch
    from converters.names import layouts
    from convnext_spec.spec import ModelSpec

    spec = ModelSpec(**SPEC_FIELDS)
    model = convnext_torch.create_model(spec)
    shapes = [tuple(v.shape) for v in model.state_dict().values()]
    state = {
        k: torch.from_numpy(v)
        for k, v in zip(model.state_dict(), deterministic_values(shapes), strict=True)
    }
    torch.save(state, work / "seed.pth")
    pth = set_zip_member((work / "seed.pth").read_bytes(), ".data/serialization_id", b"0" * 40)
    safetensors = save_safetensors(state)
    official = {k: v.numpy() for k, v in state.items()}
    hf, _ = layouts.from_official(official, "hf")
    hf_safetensors = save_safetensors({k: torch.from_numpy(v) for k, v in hf.items()})
    hf_config = json.dumps(
        {"model_type": "convnext", "layer_norm_eps": 1e-6, "num_labels": 3, "hidden_sizes": [8] * 4}
    ).encode()

    keras_model = convnext_tf.create_model(spec)
    keras_model.set_weights(deterministic_values([tuple(w.shape) for w in keras_model.weights]))
    keras_model.save_weights(work / "seed.weights.h5")
    keras_model.save(work / "seed.keras")
    members = unzip((work / "seed.keras").read_bytes())
    assert members is not None
    metadata = member_index(members, "metadata.json")
    members[metadata] = (
        "metadata.json",
        zipfile.ZIP_STORED,
        b'{"keras_version": "3", "date_saved": "2000-01-01@00:00:00"}',
    )
    return Seeds(
        state,
        pth,
        safetensors,
        (work / "seed.weights.h5").read_bytes(),
        rezip(members),
        hf_config,
        hf_safetensors,
    )


# --- the fixtures and the fuzz tests ---------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def seeds(work) -> Seeds:
    seeds = make_seeds(work)
    (work / "valid.pth").write_bytes(seeds.pth)
    (work / "valid.safetensors").write_bytes(seeds.safetensors)
    (work / "valid-hf").mkdir()
    (work / "valid-hf" / "config.json").write_bytes(seeds.hf_config)
    (work / "valid-hf" / "model.safetensors").write_bytes(seeds.hf_safetensors)
    (work / "valid.weights.h5").write_bytes(seeds.weights_h5)
    (work / "valid.keras").write_bytes(seeds.keras)
    return seeds


@pytest.fixture(scope="module")
def fuzz(work, seeds):
    warm = {
        "torch": [work / "valid.pth", work / "valid.safetensors", work / "valid-hf"],
        "keras": [work / "valid.weights.h5", work / "valid.keras"] * 2,
    }
    readers = {kind: Reader(kind, work / f"{kind}.log", warm[kind]) for kind in warm}
    fuzz = Fuzz(work, readers)
    yield fuzz
    for reader in readers.values():
        reader.stop()


def apply_ops(data: bytes, ops: tuple) -> bytes:
    for op in ops:
        data = op(data)
    return data


def save_state_dict(state: object, mode: str, path: Path) -> None:
    import torch

    if mode == "protocol4":
        torch.save(state, path, pickle_protocol=4)
    elif mode == "legacy":
        torch.save(state, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(state, path)


@fuzz_settings(examples=80)
@given(example=PTH_EXAMPLES)
def test_pth_mutations_read_or_raise_conversion_error(fuzz, seeds, example):
    path = fuzz.base / "fuzz.pth"
    if example.edit is None and example.save == "default":
        data = seeds.pth
    else:
        state = dict(seeds.state_dict)
        if example.edit is not None:
            state = example.edit.apply(state)
        save_state_dict(state, example.save, path)
        data = path.read_bytes()
        if zipfile.is_zipfile(path):  # the same bytes on every run, as the seed
            data = set_zip_member(data, ".data/serialization_id", b"0" * 40)
    path.write_bytes(apply_ops(data, example.ops))
    fuzz.check("torch", path, example)


@fuzz_settings(examples=80)
@given(example=ST_EXAMPLES)
def test_safetensors_mutations_read_or_raise_conversion_error(fuzz, seeds, example):
    from safetensors.torch import save as save_safetensors

    path = fuzz.base / "fuzz.safetensors"
    data = seeds.safetensors
    if example.edit is not None:
        state = example.edit.apply(dict(seeds.state_dict))
        with contextlib.suppress(Exception):  # safetensors refuses some names: keep the seed
            data = save_safetensors({k: v.contiguous() for k, v in state.items()})
    path.write_bytes(apply_ops(data, example.ops))
    fuzz.check("torch", path, example)


@fuzz_settings(examples=25)
@given(example=HF_EXAMPLES)
def test_hugging_face_directory_mutations_read_or_raise_conversion_error(fuzz, seeds, example):
    path = fuzz.base / "fuzz-hf"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    if not example.drop_config:
        (path / "config.json").write_bytes(apply_ops(seeds.hf_config, example.config))
    (path / "model.safetensors").write_bytes(apply_ops(seeds.hf_safetensors, example.weights))
    fuzz.check("torch", path, example)


@fuzz_settings(examples=10)
@given(example=H5_EXAMPLES)
def test_weights_h5_mutations_read_or_raise_conversion_error(fuzz, seeds, example):
    path = fuzz.base / "fuzz.weights.h5"
    data = seeds.weights_h5 if example.edits is None else example.edits(seeds.weights_h5)
    path.write_bytes(apply_ops(data, example.ops))
    fuzz.check("keras", path, example)


@fuzz_settings(examples=14)
@given(example=KERAS_EXAMPLES)
def test_keras_mutations_read_or_raise_conversion_error(fuzz, seeds, example):
    path = fuzz.base / "fuzz.keras"
    data = seeds.keras
    if example.weights is not None:
        data = Member("model.weights.h5", (example.weights,))(data)
    path.write_bytes(apply_ops(data, example.ops))
    fuzz.check("keras", path, example)


def test_the_seeds_are_the_same_bytes_on_every_run(work, seeds):
    """The derandomized slice mutates fixed offsets: the files under them must not change."""
    (work / "again").mkdir()
    again = make_seeds(work / "again")
    for field in ("pth", "safetensors", "weights_h5", "keras", "hf_config", "hf_safetensors"):
        assert getattr(again, field) == getattr(seeds, field), field


# --- the findings, each reduced to one input ---------------------------------------------------
# Strict xfails: each turns into a failure once its reader is fixed; then remove it and its
# entry in KNOWN.


def read_torch(path: Path):
    from converters.files.checkpoint import load_state_dict

    return load_state_dict(path)


def test_finding_pth_whose_zip_entry_needs_a_newer_zip_version(work, seeds):
    from converters.errors import ConversionError

    path = work / "zip-version.pth"
    path.write_bytes(ZipField("central", "version_needed", 0, 81)(seeds.pth))
    with contextlib.suppress(ConversionError):  # torch's own zip reader may read it: fine
        read_torch(path)  # anything else (BadZipFile, NotImplementedError) fails the test


def test_finding_pth_whose_zip64_locator_names_another_disk(work, seeds):
    from converters.errors import ConversionError

    path = work / "multi-disk.pth"
    path.write_bytes(ZipField("zip64_locator", "disk", 0, 1)(seeds.pth))
    with contextlib.suppress(ConversionError):  # torch's own zip reader may read it: fine
        read_torch(path)  # anything else (BadZipFile, NotImplementedError) fails the test


# Weights that reach outside their file: HDF5 would follow them (Keras before 3.13.2 did, and
# 3.13.2 with h5py 3.10 still did for links); check_self_contained (converters.files.keras_files)
# refuses them.
REACHING_OUT = {
    "external_storage": lambda target: (H5Edit(1, "external_storage", target),),
    # a link is not an array: one more array keeps load_keras_model's count right
    "external_link": lambda target: (H5Edit(1, "external_link", target), H5Edit(0, "padding", 0)),
    "virtual": lambda target: (H5Edit(1, "virtual", target),),
}


@pytest.mark.parametrize(
    "suffix, how, target",
    [(".weights.h5", how, "fifo") for how in REACHING_OUT]
    + [(".weights.h5", "external_storage", "file"), (".keras", "virtual", "file")],
)
def test_finding_weights_that_reach_outside_their_file_are_refused(
    fuzz, work, seeds, suffix, how, target
):
    fifo = work / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    other = work / "valid.weights.h5"  # an HDF5 file with the same datasets
    edits = H5Edits(REACHING_OUT[how](str(fifo if target == "fifo" else other)))
    if suffix == ".keras":
        data = Member("model.weights.h5", (edits,))(seeds.keras)
    else:
        data = edits(seeds.weights_h5)
    path = work / f"outside-{how}-{target}{suffix}"
    path.write_bytes(data)
    result = fuzz.readers["keras"].read(path, timeout=10)
    assert result["outcome"] == "ConversionError", result


# --- SavedModel graphs: an operation outside the allow-list, anywhere that runs -------------


@pytest.fixture(scope="module")
def savedmodel_graph(work) -> tuple[Path, bytes, list[str]]:
    """A convnext export SavedModel of the tiny spec, its saved_model.pb, and the names of
    every TensorFlow op outside converters.files.savedmodel.ALLOWED_OPS (tf.raw_ops knows them)."""
    import tensorflow as tf

    import convnext_tf
    from converters.deploy.export import export_model
    from converters.files.savedmodel import ALLOWED_OPS
    from convnext_spec.spec import ModelSpec

    path = work / "graph_savedmodel"
    if not path.exists():
        export_model(convnext_tf.create_model(ModelSpec(**SPEC_FIELDS)), path)
    forbidden = sorted(set(dir(tf.raw_ops)) - ALLOWED_OPS - {"__doc__"})
    forbidden = [name for name in forbidden if not name.startswith("_")]
    return path, (path / "saved_model.pb").read_bytes(), forbidden


@fuzz_settings(examples=30)
@given(data=st.data())
def test_savedmodel_with_a_forbidden_op_anywhere_it_runs_is_refused(savedmodel_graph, data):
    """One node of one function that loading or calling reaches (a signature, the stages
    trace, a function those call) gets an op outside the allow-list: refused, naming it."""
    from tensorflow.core.protobuf import saved_model_pb2

    from converters.errors import ConversionError
    from converters.files.savedmodel import check_savedmodel, roots

    path, original, forbidden = savedmodel_graph
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(original)
    graph = saved.meta_graphs[0]
    reached = sorted(roots(graph.object_graph_def))
    functions = {f.signature.name: f for f in graph.graph_def.library.function}
    function = functions[data.draw(st.sampled_from(reached), label="function")]
    node = function.node_def[data.draw(st.integers(0, len(function.node_def) - 1), label="node")]
    node.op = data.draw(st.sampled_from(forbidden), label="op")
    target = path.with_name("graph_mutant")
    target.mkdir(exist_ok=True)
    (target / "saved_model.pb").write_bytes(saved.SerializeToString())
    with pytest.raises(ConversionError, match=f"runs {node.op}"):
        check_savedmodel(target)


@fuzz_settings(examples=30)
@given(ops=st.lists(BYTE_OPS, min_size=1, max_size=4))
def test_savedmodel_pb_mutations_check_or_raise_conversion_error(savedmodel_graph, ops):
    """Mutated bytes of saved_model.pb: the check passes or refuses in one line, nothing else
    (no DecodeError, no IndexError from a node id that points nowhere)."""
    from converters.errors import ConversionError
    from converters.files.savedmodel import check_savedmodel

    path, original, _ = savedmodel_graph
    target = path.with_name("bytes_mutant")
    target.mkdir(exist_ok=True)
    (target / "saved_model.pb").write_bytes(apply_ops(original, tuple(ops)))
    with contextlib.suppress(ConversionError):
        check_savedmodel(target)


# --- the harness itself ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def selftest(work):
    """A child whose reader does what each file says: crash, hang, raise, fill memory."""
    reader = Reader("selftest", work / "selftest.log", [])
    yield reader
    reader.stop()


@pytest.mark.parametrize(
    "behaviour, outcome, why",
    [
        ("ok", "ok", None),
        ("conversion", "ConversionError", None),
        ("two lines", "ConversionError", "not one line"),
        ("raise", "other", "builtins.KeyError"),
        ("segfault", "crash", "killed by SIGSEGV"),
        ("abort", "crash", "killed by SIGABRT"),
        ("exit", "crash", "exited with status 3"),
        ("hang", "hang", "no answer within 1 s"),
        ("memory", "ok", "raised peak memory by"),
        ("huge", "other", "MemoryError"),
    ],
)
def test_the_harness_sees_crashes_hangs_exceptions_and_memory(
    work, selftest, behaviour, outcome, why
):
    if behaviour == "huge":
        if selftest.process is None:
            selftest.start()
        if selftest.limit is None:
            pytest.skip("the address space cannot be capped here (RLIMIT_AS)")
    path = work / "behaviour.txt"
    path.write_text(behaviour)
    result = selftest.read(path, timeout=1 if behaviour == "hang" else READ_TIMEOUT)
    assert result["outcome"] == outcome, result
    if why is None:
        assert problem(result) is None
    else:
        assert why in problem(result)
