"""The palisade binary started for a test: a fresh database and configuration in a
temporary directory, on a free port, stopped (or killed) and started again on the same
database."""

import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path


def binary() -> str:
    if "PALISADE_BIN" in os.environ:
        return os.environ["PALISADE_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/palisade-target"))
    return str(Path(target) / "debug/palisade")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running server. `extra_global` is appended to the `[global]` section."""

    def __init__(self, extra_global: str = ""):
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name)
        self.port = free_port()
        self.config = self.path / "homeserver.toml"
        self.config.write_text(
            f"""[global]
server_name = "localhost"
port = {self.port}
database_path = "{self.dir.name}/db"
allow_registration = true
{extra_global}
"""
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.path / "server.log", "a")
        self.process = None
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            [binary(), "--config", str(self.config)],
            stdout=self.log,
            stderr=self.log,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        for _ in range(400):
            try:
                urllib.request.urlopen(f"{self.url}/_matrix/client/versions", timeout=1)
                return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError((self.path / "server.log").read_text())
                time.sleep(0.05)
        raise RuntimeError("the server did not come up")

    def kill(self):
        """SIGKILL: no shutdown, what was acknowledged must be on disk."""
        self.process.kill()
        self.process.wait()

    def stop(self):
        if self.process.poll() is None:
            self.kill()
        self.log.close()
        self.dir.cleanup()
