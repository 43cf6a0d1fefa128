"""Debian's mosquitto as a real MQTT broker for tests (scripts/ensure-system-deps.sh installs it),
on a free loopback port, with persistence so that sessions survive a restart."""

import socket
import subprocess
import time
from pathlib import Path

from tests.processes import free_port

MOSQUITTO = Path("/usr/sbin/mosquitto")


class Mosquitto:
    def __init__(self, directory: Path, *, certificates: Path | None = None) -> None:
        """certificates: a folder with fullchain.pem and privkey.pem (tests.processes
        self_signed_certificate): the listener speaks TLS with them."""
        self.port = free_port()
        self.directory = directory
        self.tls = certificates is not None
        self.config = directory / "mosquitto.conf"
        tls = (
            f"certfile {certificates / 'fullchain.pem'}\nkeyfile {certificates / 'privkey.pem'}\n"
            if certificates is not None
            else ""
        )
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n" + tls + "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {directory}/\n"
            "user root\n"
            f"log_dest file {directory}/mosquitto.log\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        # The test certificate is for "localhost".
        return f"mqtts://localhost:{self.port}" if self.tls else f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen([str(MOSQUITTO), "-c", str(self.config)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError("mosquitto exited at start") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen within 10 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # saves its persistence file on the way out
            self.process.wait(10)
        self.process = None
