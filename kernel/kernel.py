"""The guarded hospital kernel: an IPythonKernel with the data catalog and the output guard.

`GuardedKernel` loads the custodian's policy (`--policy FILE` or `BEDSIDE_POLICY`), puts a
`hospital` catalog in the user namespace, wraps the kernel session's `send` so that every message
on iopub, shell, control and stdin passes `OutputGuard.check` (the types it would pass unread,
`guard.PASS_TYPES` such as status, go straight out), hooks the display formatter so
objects are judged before they are rendered, captures file descriptors 1 and 2 through a pipe the
guard reads (raw `os.write` and subprocess output included), and refuses the magics that dump
values (`%whos`, `%debug`, `%xmode Verbose`) and, when the policy says `shell: deny`, shell
escapes. The debugger is disabled: it would read variables past the guard.

The guard's own machinery (pandas and its provenance hooks, the text scanner, numpy) takes most
of a second to import and build, so the kernel arms it on a background thread, started as soon as
the kernel is built, and answers `kernel_info` meanwhile. Until it is armed, only messages the
guard passes unread anyway (`EARLY_TYPES`: status, kernel_info_reply, ...) are sent; every other
message, every cell and every use of the guard waits for it, and a guard that cannot be built
stops the kernel.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ipykernel.iostream import OutStream
from ipykernel.ipkernel import IPythonKernel
from ipykernel.kernelapp import IPKernelApp
from traitlets import DottedObjectName, Float

from bedside import __version__, _starttrace
from bedside.errors import GuardError, PolicyError
from bedside.kernel import BEHIND_SENTRY_ENV
from bedside.policy.decision import Decision

if TYPE_CHECKING:
    import pandas as pd

    from bedside.kernel._provenance import ProvenanceTracker
    from bedside.kernel._scan import TextScanner
    from bedside.kernel.guard import OutputGuard

POLICY_ENV = "BEDSIDE_POLICY"
# Magics that print values of the namespace or open a debugger on live frames.
DENIED_MAGICS = ("whos", "debug", "pdb", "pinfo2", "psource", "pfile")
SHELL_MAGICS = ("system", "sx", "sc", "bash", "sh", "script", "perl", "ruby", "python2",
                "python3", "pypy", "svg")  # fmt: skip
SAFE_XMODES = ("plain", "context", "minimal", "docs")
# Sent before the guard is armed: messages whose content the kernel writes itself, none of which
# the guard reads (a subset of guard.PASS_TYPES, checked by the tests).
EARLY_TYPES = frozenset({"status", "kernel_info_reply", "comm_info_reply", "is_complete_reply",
                         "shutdown_reply", "interrupt_reply", "connect_reply", "usage_reply",
                         "iopub_welcome"})  # fmt: skip

_preloaded_policy: Any = None
# The stderr the kernel was started with (fd 2 soon becomes a pipe whose text is cell output):
# where a kernel that cannot arm its guard says so before it exits. Set by __main__.
_stderr_fd: int | None = None


def load_kernel_policy(path: str | os.PathLike[str] | None = None) -> Any:
    """The policy the kernel runs under, from `path` or `BEDSIDE_POLICY`; raises PolicyError."""
    from bedside.policy import load_policy

    path = path or os.environ.get(POLICY_ENV)
    if not path:
        raise PolicyError(
            "the guarded kernel needs a policy",
            fix=f"start it with --policy FILE or set {POLICY_ENV}=/path/to/policy.yaml",
        )
    return load_policy(Path(path))


class Hospital:
    """The data catalog in the researcher's namespace: table names and schemas, protected data.

    `tables()` shows names, row counts, column names and types, never values. `load(name)` gives
    the protected DataFrame; everything derived from it is judged by the guard before display.
    """

    def __init__(self, kernel: GuardedKernel) -> None:
        self._kernel = kernel
        self._frames: dict[str, pd.DataFrame] = {}

    def _frame(self, name: str) -> pd.DataFrame:
        datasets = self._kernel.policy.datasets
        if name not in datasets:
            raise GuardError(
                f"no table {name!r} in this hospital; available: {', '.join(sorted(datasets))}"
            )
        if name not in self._frames:
            from bedside.policy import load_dataset

            dataset = datasets[name]
            frame = load_dataset(dataset)
            self._kernel.register_table(name, frame, list(dataset.identifiers))
            self._frames[name] = frame
        return self._frames[name]

    def tables(self) -> pd.DataFrame:
        """One row per column of every table: table, rows, column, dtype, identifier."""
        import pandas as pd

        rows = []
        for name, dataset in sorted(self._kernel.policy.datasets.items()):
            frame = self._frame(name)
            with self._kernel.tracker.quiet():
                for col, dtype in frame.dtypes.items():
                    rows.append({"table": name, "rows": len(frame), "column": str(col),
                                 "dtype": str(dtype),
                                 "identifier": col in dataset.identifiers})  # fmt: skip
        return pd.DataFrame(rows)

    def load(self, name: str) -> pd.DataFrame:
        """The protected table `name` (a copy you may modify; the guard follows what you derive)."""
        return self._frame(name).copy(deep=False)

    def release(
        self, obj: Any, *, name: str, kind: str = "model", train: Any = None, holdout: Any = None
    ) -> Any:
        """Ask to take a model, table or figure home through the airlock (`bedside.kernel.release`).

        `train`/`holdout` are `(X, y)` pairs for the checks that compare a model with its records.
        """
        from bedside.kernel.release import release_from_kernel

        return release_from_kernel(
            self._kernel, obj, name=name, kind=kind, train=train, holdout=holdout
        )

    def __repr__(self) -> str:
        names = ", ".join(sorted(self._kernel.policy.datasets))
        return f"<hospital: tables {names}; hospital.tables() for schemas, hospital.load(name)>"


# With BEDSIDE_START_TRACE=1 (off by default), a large stream output leaves timestamps as the
# guard takes it, passes it and sends it (`mb.kernel.*`, for `bench/mb_timeline.py`).
_TRACE = _starttrace.enabled()


def _large_stream(msg: dict[str, Any]) -> bool:
    text = msg.get("content", {}).get("text") if msg["header"]["msg_type"] == "stream" else None
    return isinstance(text, str) and len(text) >= 64 * 1024


class GuardedOutStream(OutStream):
    """stdout/stderr that always capture file descriptors 1 and 2 (even under pytest)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["watchfd"] = "force"
        super().__init__(*args, **kwargs)


class GuardedKernel(IPythonKernel):
    """An IPython kernel whose every outgoing message passes the bedside output guard."""

    implementation = "bedside"
    implementation_version = __version__
    banner = "bedside guarded kernel: outputs are checked against the hospital's policy"
    # ipykernel sleeps 0.5 ms before every execute_reply ("on rare occasions the flush doesn't
    # seem to make it to the clients"): a tenth of a trivial cell's round trip. Here
    # `sys.stdout.flush()` returns once the IOPub thread has sent the output (ipykernel 7), and
    # the reply and the outputs travel on different sockets whose order no client relies on:
    # a cell is done at its `idle` status, which follows its outputs on the same socket.
    _execute_sleep = Float(0.0).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy = _preloaded_policy or load_kernel_policy()
        self._armed = threading.Event()
        self._pass_types: frozenset[str] = frozenset()  # guard.PASS_TYPES once it is armed
        self._guard_module: Any = None  # bedside.kernel.guard once it is armed
        self._arm_error: BaseException | None = None
        self.hospital = Hospital(self)
        self.executed_cells: list[str] = []
        self._install_send_guard()
        self._install_formatter_guard()
        self._install_magic_guard()
        self.shell.user_ns["hospital"] = self.hospital
        self.shell.InteractiveTB.set_mode("Context")
        self._arming_lock = threading.Lock()
        self._arming: threading.Thread | None = None
        # Armed from now on, while the kernel finishes starting and answers kernel_info. (Armed
        # only after the first kernel_info_reply, a first cell sent at once waited for all of it,
        # and a page reloaded meanwhile lost the openings of its cells in the researcher's ledger:
        # tests/integration/test_researcher.py::test_websockets_dropped_and_reopened_...)
        self._start_arming()

    # -- the guard, armed in the background ----------------------------------------------------
    def _start_arming(self) -> None:
        with self._arming_lock:
            if self._arming is None:
                self._arming = threading.Thread(
                    target=self._arm, name="bedside-arm-guard", daemon=True
                )
                self._arming.start()

    def _arm(self) -> None:
        """Import and build the guard (pandas hooks, scanner) while the kernel starts serving."""
        try:
            # Imported as a cell would import them, with `get_ipython` in builtins: pandas
            # decides at import whether it runs in a terminal, and outside a cell it would
            # think so (display.max_columns 0: wide frames not truncated to 20 columns as in a
            # plain kernel, and the terminal's size looked up at every repr).
            with self.shell.builtin_trap:
                from bedside.kernel._provenance import ProvenanceTracker
                from bedside.kernel._scan import TextScanner
                from bedside.kernel.guard import PASS_TYPES, OutputGuard

            tracker = ProvenanceTracker(self.policy.disclosure)
            scanner = TextScanner(self.policy.enabled_phi_patterns)
            guard = OutputGuard(
                self.policy, tracker, scanner,
                behind_sentry=os.environ.get(BEHIND_SENTRY_ENV) == "1",
            )  # fmt: skip
            tracker.install()
            self._tracker, self._scanner, self._guard = tracker, scanner, guard
            self._pass_types = PASS_TYPES
            self._guard_module = sys.modules[OutputGuard.__module__]
        except BaseException as exc:  # noqa: BLE001 - reported below, fails closed
            self._arm_error = exc
        finally:
            self._armed.set()
        if self._arm_error is not None:
            # No guard, no kernel: nothing may run or leave unguarded. The sentry (or the
            # client) sees the kernel die and tells the researcher.
            text = f"bedside kernel: cannot build the output guard: {self._arm_error!r}\n"
            try:
                os.write(_stderr_fd if _stderr_fd is not None else 2, text.encode())
            finally:
                os._exit(1)

    def wait_armed(self) -> None:
        """Block until the guard is armed (arming it now if it is not on its way)."""
        if not self._armed.is_set():
            self._start_arming()
            self._armed.wait()
        if self._arm_error is not None:
            raise GuardError(f"the output guard could not be built: {self._arm_error!r}")

    @property
    def guard(self) -> OutputGuard:
        self.wait_armed()
        return self._guard

    @property
    def tracker(self) -> ProvenanceTracker:
        self.wait_armed()
        return self._tracker

    @property
    def scanner(self) -> TextScanner:
        self.wait_armed()
        return self._scanner

    # -- hooks -------------------------------------------------------------------------------
    def register_table(self, name: str, frame: pd.DataFrame, identifiers: list[str]) -> None:
        self.tracker.protect(name, frame)
        with self.tracker.quiet():
            self.scanner.add_table(frame, identifiers)
        self.guard.columns.update(str(c) for c in frame.columns)
        self.guard.columns.add(name)

    def _install_send_guard(self) -> None:
        session = self.session
        original = session.send

        def send(stream: Any, msg_or_type: Any, content: Any = None, parent: Any = None,
                 ident: Any = None, buffers: Any = None, track: bool = False,
                 header: Any = None, metadata: Any = None) -> Any:  # fmt: skip
            if isinstance(msg_or_type, dict):
                msg = msg_or_type
            else:
                msg = session.msg(msg_or_type, content=content, parent=parent, header=header,
                                  metadata=metadata)  # fmt: skip
            msg_type = msg["header"]["msg_type"]
            # Messages the guard passes unread (guard.PASS_TYPES, known once it is armed) go
            # straight out; before it is armed, only the few the kernel sends while starting.
            if msg_type in self._pass_types or (
                msg_type in EARLY_TYPES and not buffers and not self._armed.is_set()
            ):
                return original(stream, msg, ident=ident, buffers=buffers, track=track)
            if buffers:
                msg["buffers"] = list(buffers)
            traced = _TRACE and _large_stream(msg)
            if traced:
                _starttrace.mark("mb.kernel.guard")
            checked = self.guard.check(msg, self._channel_of(stream, msg))
            if checked is None:
                return None
            if traced:
                _starttrace.mark("mb.kernel.checked")
            out_buffers = checked.pop("buffers", None) if buffers else buffers
            sent = original(stream, checked, ident=ident, buffers=out_buffers, track=track)
            if traced:
                _starttrace.mark("mb.kernel.sent")
            return sent

        session.send = send  # type: ignore[method-assign]

    def _channel_of(self, stream: Any, msg: dict[str, Any]) -> str:
        if stream is self.iopub_socket or stream is getattr(self, "iopub_thread", None):
            return "iopub"
        if stream is self.stdin_socket:
            return "stdin"
        if stream is getattr(self, "control_stream", None):
            return "control"
        msg_type = msg["header"]["msg_type"]
        return "shell" if msg_type.endswith("_reply") else "iopub"

    def _install_formatter_guard(self) -> None:
        formatter = self.shell.display_formatter
        original = formatter.format

        def format(obj: Any, include: Any = None, exclude: Any = None) -> Any:  # noqa: A001
            guard = self.guard
            gm = self._guard_module  # bedside.kernel.guard, imported when the guard was armed
            try:
                decision, target = guard.judge_object(obj)
            except Exception as exc:  # noqa: BLE001 - fail closed
                decision, target = Decision.block(
                    "guard-error", f"the guard could not judge this object ({type(exc).__name__})",
                    gm.ADVICE["guard-error"]), obj  # fmt: skip
            if decision is not None and decision.blocked:
                return gm.notice_bundle(decision), {"bedside": decision.to_metadata()}
            with guard.tracker.quiet():
                data, md = original(target, include=include, exclude=exclude)
                if "image/svg+xml" in data and gm._is_figure(target):
                    # SVG carries the plotted coordinates: a checked figure goes out as PNG.
                    from IPython.core.pylabtools import print_figure

                    data = {k: v for k, v in data.items() if k != "image/svg+xml"}
                    data["image/png"] = print_figure(target, "png", base64=True)
                    decision = Decision.redact("svg", "SVG output replaced by PNG",
                                               gm.ADVICE["svg"])  # fmt: skip
            if decision is not None and decision.rule not in ("pass", "schema-or-summary"):
                md = dict(md or {})
                md["bedside"] = decision.to_metadata()
            return data, md

        formatter.format = format  # type: ignore[method-assign]

    def _notice(self, decision: Decision) -> None:
        from IPython.display import publish_display_data

        from bedside.kernel.guard import notice_bundle

        publish_display_data(notice_bundle(decision), metadata={"bedside": decision.to_metadata()})

    def _refuser(self, name: str, rule: str) -> Any:
        def refuse(line: str = "", cell: str | None = None) -> None:
            from bedside.kernel.guard import ADVICE

            what = "shell commands are" if rule == "shell" else f"%{name} is"
            self._notice(Decision.block(rule, f"{what} disabled in the guarded kernel",
                                        ADVICE[rule]))  # fmt: skip

        return refuse

    def _install_magic_guard(self) -> None:
        shell = self.shell
        denied = {m: "magic" for m in DENIED_MAGICS}
        denied.update({m: "magic" for m in getattr(self.policy, "magics_deny", []) or []})
        if getattr(self.policy, "shell", "deny") == "deny":
            denied.update({m: "shell" for m in SHELL_MAGICS})
            refuse_shell = self._refuser("system", "shell")
            shell.system = lambda cmd: refuse_shell()  # type: ignore[method-assign]
            shell.getoutput = lambda cmd, split=True, depth=0: refuse_shell()  # type: ignore[method-assign]
        for name, rule in denied.items():
            name = name.lstrip("%")
            fn = self._refuser(name, rule)
            shell.register_magic_function(fn, magic_kind="line", magic_name=name)
            shell.register_magic_function(fn, magic_kind="cell", magic_name=name)
        original_xmode = shell.find_line_magic("xmode")
        refuse_verbose = self._refuser("xmode Verbose", "magic")

        def xmode(line: str = "") -> Any:
            mode = line.strip().lower()
            if mode and mode not in SAFE_XMODES:
                return refuse_verbose()
            if not mode:  # xmode with no argument cycles modes, through Verbose
                return refuse_verbose()
            return original_xmode(line)

        shell.register_magic_function(xmode, magic_kind="line", magic_name="xmode")

    # -- kernel overrides ----------------------------------------------------------------------
    async def do_execute(self, code: str, silent: bool, *args: Any, **kwargs: Any) -> Any:
        parent = self.get_parent("shell") or {}
        self.guard.begin_cell(code, parent.get("header", {}).get("msg_id", ""))
        self.executed_cells.append(parent.get("header", {}).get("msg_id", ""))  # release producers
        if self.shell.InteractiveTB.mode == "Verbose":  # set by %config or other means
            self.shell.InteractiveTB.set_mode("Context")
        return await super().do_execute(code, silent, *args, **kwargs)

    async def do_debug_request(self, msg: Any) -> Any:
        return {"type": "response", "request_seq": msg.get("seq"), "success": False,
                "command": msg.get("command"),
                "message": "the debugger is disabled in the guarded kernel"}  # fmt: skip

    @property
    def kernel_info(self) -> dict[str, Any]:
        info = dict(super().kernel_info)
        info["supported_features"] = [
            f for f in info.get("supported_features", []) if f != "debugger"
        ]
        info["debugger"] = False
        return info


class GuardedKernelApp(IPKernelApp):
    """IPKernelApp launching `GuardedKernel` with file-descriptor capture forced on."""

    name = "bedside-kernel"
    outstream_class = DottedObjectName("bedside.kernel.kernel.GuardedOutStream")

    def init_kernel(self) -> None:
        # IPython keeps every session's code in one sqlite file under the profile, and a
        # history_request reads it back across sessions: a researcher would be shown cells
        # (and any value typed into them) from other sessions on the same host. The session
        # ledger is the record; the kernel's history lives and dies with the session.
        self.config.HistoryManager.hist_file = ":memory:"
        super().init_kernel()
