"""Azurite, the real Table and Queue Storage emulator, on free ports."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers.processes import ROOT, free_port, spawn, stop, wait_for_port

ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft; not a secret).
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(table_port: int, queue_port: int, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={DEV_KEY};"
        f"TableEndpoint=http://{host}:{table_port}/{ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue_port}/{ACCOUNT};"
    )


@dataclass
class Azurite:
    table_port: int
    queue_port: int
    location: Path | None = None
    log: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def connection_string(self) -> str:
        return connection_string(self.table_port, self.queue_port)

    def start(self) -> Azurite:
        binary = ROOT / "node_modules" / ".bin" / "azurite"
        args = [
            str(binary),
            "--blobPort", str(free_port()),
            "--queuePort", str(self.queue_port),
            "--tablePort", str(self.table_port),
            "--blobHost", "127.0.0.1",
            "--queueHost", "127.0.0.1",
            "--tableHost", "127.0.0.1",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
            "--loose",
        ]  # fmt: skip
        if self.location is None:
            args.append("--inMemoryPersistence")
        else:
            args += ["--location", str(self.location)]
        self.proc = spawn(args, log=self.log)
        wait_for_port(self.table_port, self.proc)
        wait_for_port(self.queue_port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


def start_azurite(location: Path | None = None, log: Path | None = None) -> Azurite:
    return Azurite(free_port(), free_port(), location=location, log=log).start()
