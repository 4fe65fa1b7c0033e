"""A real Jupyter server for the notebook checks: start it, run notebooks through it, stop it.

:class:`JupyterServer` starts ``jupyter lab`` (or the bare ``jupyter server``) from this
Python environment on ``127.0.0.1`` with a random token and a free port, waits until its
REST API answers, and stops it (``POST /api/shutdown``, then the process) on exit.

:func:`execute_notebook` runs a notebook *the way a person does in JupyterLab*: the server
opens the notebook (contents API), starts a session with the kernel the notebook names
(``metadata.kernelspec.name``; the project's kernel is ``crapnet``, registered by
``make lab``), and every code cell is sent as an ``execute_request`` over the kernel's
WebSocket channel (the Jupyter messaging protocol, JSON over ``/api/kernels/<id>/channels``).
The kernel's working folder is the notebook's folder, as in JupyterLab. An error output, a
dead kernel or a cell running past its timeout raises :class:`NotebookRunError` naming the
notebook, the cell and the error. Papermill (the book's batch runner) talks to the kernel
directly through nbclient; this path goes through the server and its WebSocket instead.

nbclient/papermill cannot run through a server and jupyter_server has no "run this notebook"
endpoint, hence the small client below (``websocket-client``, a jupyter_server dependency).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class NotebookRunError(RuntimeError):
    """A notebook failed when executed through the Jupyter server."""


class ServerError(RuntimeError):
    """The Jupyter server did not start or did not answer."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_kernelspec(
    folder: str | os.PathLike, name: str = "crapnet", display_name: str = "Python (crapnet)", python: str | None = None
) -> Path:
    """A kernelspec ``<folder>/kernels/<name>/kernel.json`` starting ipykernel with ``python``.

    The same spec as ``python -m ipykernel install --name crapnet`` writes (``make lab``
    installs it into ``.venv``); point ``JUPYTER_PATH`` at ``folder`` to make it visible.
    """
    spec = {
        "argv": [python or sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        "metadata": {"debugger": True},
    }
    path = Path(folder) / "kernels" / name / "kernel.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=1))
    return path


class JupyterServer:
    """``jupyter lab`` (``app="lab"``) or ``jupyter server`` (``app="server"``) on 127.0.0.1.

    ``root``: the folder the server serves (the repository); ``env``: the server's (and its
    kernels') environment, default this process's. Use as a context manager; ``url`` and
    ``token`` are set once it answers. The log goes to ``log`` (default a temporary file).
    Offline: JupyterLab's update check and news feed are switched off.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        app: str = "lab",
        env: Mapping[str, str] | None = None,
        timeout: float = 120.0,
        log: str | os.PathLike | None = None,
    ):
        if app not in ("lab", "server"):
            raise ValueError(f"app: {app!r} is not 'lab' or 'server'")
        self.root = Path(root).resolve()
        self.app = app
        self.env = dict(os.environ if env is None else env)
        self.timeout = timeout
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log) if log else Path(tempfile.mkstemp(prefix="crapnet-jupyter-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    # -- life cycle
    def start(self) -> JupyterServer:
        module = "jupyterlab" if self.app == "lab" else "jupyter_server"
        cmd = [
            sys.executable,
            "-m",
            module,
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.allow_remote_access=False",
            "--ServerApp.terminals_enabled=False",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers/CI run as root; Jupyter refuses without this
            cmd.append("--ServerApp.allow_root=True")
        if self.app == "lab":
            cmd += [
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.news_url=None",
                "--LabApp.extension_manager=readonly",
            ]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=str(self.root), stdin=subprocess.DEVNULL
        )
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"jupyter {self.app} exited with status {self.proc.returncode} before answering; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                self.api("GET", "/api/status")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise ServerError(
            f"jupyter {self.app} did not answer on {self.url} within {self.timeout:.0f} s; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.api("POST", "/api/shutdown", timeout=10)
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self._log.close()
        self.proc = None

    def __enter__(self) -> JupyterServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- REST
    def api(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        """One REST call (token in the header); the decoded JSON answer (None when empty)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def lab_url(self, notebook: str) -> str:
        """The JupyterLab URL that opens ``notebook`` (a path relative to ``root``), token included."""
        return f"{self.url}/lab/tree/{notebook}?token={self.token}"


def _message(msg_type: str, content: dict, session: str) -> dict:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "username": "crapnet",
            "session": session,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "channel": "shell",
        "buffers": [],
    }


def _output(msg: dict) -> dict | None:
    """The nbformat output of one iopub message (None for messages that are not outputs)."""
    kind, content = msg["header"]["msg_type"], msg["content"]
    if kind == "stream":
        return {"output_type": "stream", "name": content["name"], "text": content["text"]}
    if kind in ("display_data", "execute_result"):
        out = {"output_type": kind, "data": content.get("data", {}), "metadata": content.get("metadata", {})}
        if kind == "execute_result":
            out["execution_count"] = content.get("execution_count")
        return out
    if kind == "error":
        return {
            "output_type": "error",
            "ename": content["ename"],
            "evalue": content["evalue"],
            "traceback": content.get("traceback", []),
        }
    return None


def execute_notebook(
    server: JupyterServer,
    notebook: str,
    parameters: Mapping[str, Any] | None = None,
    cell_timeout: float = 600.0,
    kernel: str | None = None,
) -> dict:
    """Execute ``notebook`` (path relative to the server's root) cell by cell through the server.

    ``parameters``: assignments run right after the cell tagged ``parameters`` (as papermill
    injects them); None runs the notebook with its defaults. ``kernel``: the kernelspec name
    (default the notebook's own). Returns the notebook JSON with the outputs filled in.
    Raises :class:`NotebookRunError` on the first cell with an error output, a dead kernel or
    a cell running past ``cell_timeout`` seconds.
    """
    import websocket  # websocket-client, a jupyter_server dependency

    model = server.api("GET", f"/api/contents/{notebook}?content=1&type=notebook")
    nb = model["content"]
    name = kernel or nb.get("metadata", {}).get("kernelspec", {}).get("name") or "python3"
    try:
        sess = server.api(
            "POST",
            "/api/sessions",
            {"path": notebook, "name": Path(notebook).name, "type": "notebook", "kernel": {"name": name}},
            timeout=60,
        )
    except urllib.error.HTTPError as err:
        raise NotebookRunError(
            f"{notebook}: the server could not start kernel {name!r} ({err}); "
            "register it with `make lab` (or `make kernel`)"
        ) from None
    kernel_id = sess["kernel"]["id"]
    ws_url = server.url.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels?token={server.token}"
    ws = websocket.create_connection(ws_url, timeout=cell_timeout)
    session = uuid.uuid4().hex
    cells = nb.get("cells", [])
    if parameters:
        tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
        at = tagged[0] + 1 if tagged else 0
        code = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
        cells.insert(
            at,
            {
                "cell_type": "code",
                "metadata": {"tags": ["injected-parameters"]},
                "source": code,
                "outputs": [],
                "execution_count": None,
            },
        )
    try:
        count = 0
        for index, cell in enumerate(cells):
            if cell.get("cell_type") != "code":
                continue
            count += 1
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            msg = _message(
                "execute_request",
                {
                    "code": source,
                    "silent": False,
                    "store_history": True,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
                session,
            )
            ws.send(json.dumps(msg))
            outputs: list[dict] = []
            idle = replied = False
            reply: dict = {}
            deadline = time.time() + cell_timeout
            while not (idle and replied):
                if time.time() > deadline:
                    raise NotebookRunError(f"{notebook}: code cell {count} ran past {cell_timeout:.0f} s")
                try:
                    incoming = json.loads(ws.recv())
                except websocket.WebSocketTimeoutException:
                    raise NotebookRunError(f"{notebook}: code cell {count} ran past {cell_timeout:.0f} s") from None
                except websocket.WebSocketConnectionClosedException:
                    raise NotebookRunError(
                        f"{notebook}: the kernel connection closed during code cell {count} "
                        f"(kernel died?); server log:\n{server.log_tail()}"
                    ) from None
                if incoming.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]:
                    continue
                kind = incoming["header"]["msg_type"]
                if kind == "execute_reply":
                    replied, reply = True, incoming["content"]
                elif kind == "status" and incoming["content"].get("execution_state") == "idle":
                    idle = True
                elif kind == "clear_output":
                    # kept: JupyterLab routes a clear_output inside an ipywidgets Output to that widget,
                    # not to the cell; dropping the cell's outputs here would hide what the cell printed
                    continue
                else:
                    out = _output(incoming)
                    if out is not None:
                        outputs.append(out)
            cell["outputs"] = outputs
            cell["execution_count"] = reply.get("execution_count")
            if reply.get("status") == "error" or any(o["output_type"] == "error" for o in outputs):
                err = next((o for o in outputs if o["output_type"] == "error"), reply)
                first = next((ln for ln in source.splitlines() if ln.strip()), "")
                raise NotebookRunError(
                    f"{notebook}: code cell {count} (cell {index}, `{first.strip()[:80]}`) "
                    f"failed: {err.get('ename')}: {err.get('evalue')}"
                )
    finally:
        try:
            ws.close()
        finally:
            try:
                server.api("DELETE", f"/api/sessions/{sess['id']}")
            except (urllib.error.URLError, OSError):
                pass
    return nb


__all__ = ["JupyterServer", "execute_notebook", "write_kernelspec", "NotebookRunError", "ServerError", "free_port"]
