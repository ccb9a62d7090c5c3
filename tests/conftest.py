"""Shared fixtures. Every test runs with outbound network refused, which proves offline operation."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

if "PYTEST_XDIST_WORKER" in os.environ:
    # The suite runs in one worker per core (pyproject's addopts): one thread each, so the workers do not
    # oversubscribe the cores, and so the fresh processes of the reload tests compute with the same thread count
    # as the test that compares their outputs bit for bit. Set before torch is first imported.
    os.environ["OMP_NUM_THREADS"] = "1"

import yoloslim  # noqa: F401  (configures ultralytics for offline use before any test imports it)


class NetworkRefused(OSError):
    pass


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str) or host in {"localhost", ""}:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True, scope="session")
def refuse_network():
    """Non-loopback connects and DNS lookups fail for the whole session (AF_UNIX sockets are untouched)."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise NetworkRefused(f"test refused network connection to {address!r}")
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise NetworkRefused(f"test refused network connection to {address!r}")
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):
            raise socket.gaierror(f"test refused DNS lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
    yield
    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = (
        real_connect, real_connect_ex, real_getaddrinfo)


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory) -> str:
    """A tiny 3-class dataset at 64 px, shared by every test that trains or validates."""
    from yoloslim.data import generate_dataset

    out = tmp_path_factory.mktemp("data") / "shapes"
    return str(generate_dataset("shapes", out, n_train=16, n_val=8, imgsz=64, seed=0, show_progress=False))


@pytest.fixture(scope="session")
def trained_yolov8n(shapes_data, tmp_path_factory) -> str:
    """best.pt of yolov8n trained 1 epoch at 64 px on the shapes data (session-wide, ~10 s)."""
    from yoloslim.engine.train import train

    project = tmp_path_factory.mktemp("runs")
    result = train("yolov8n.yaml", shapes_data, epochs=1, imgsz=64, batch=8, project=project, name="base",
                   plots=False, val=True)
    return str(result.best)


RELOAD_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, torch
    from ultralytics import YOLO
    x = torch.load(sys.argv[1])
    for path in sys.argv[2:]:
        model = YOLO(path)
        net = model.model.float().eval()
        with torch.no_grad():
            torch.save(net(x)[0], path + ".out")
        model.predict(np.zeros((x.shape[2], x.shape[3], 3), dtype=np.uint8), imgsz=x.shape[2], verbose=False)
        print(sum(p.numel() for p in net.parameters()))
""")


def outputs_in_fresh_process(paths: list[Path], x, folder: Path) -> list[tuple[int, object]]:
    """(parameter count, first eval output on ``x``) of each checkpoint loaded with plain ``YOLO(path)`` in a new
    Python process, which proves the files need nothing from the process that wrote them. Each is also run
    through ``predict`` once."""
    import torch

    torch.save(x, folder / "x.pt")
    script = folder / "reload.py"
    script.write_text(RELOAD_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(folder / "x.pt"), *map(str, paths)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    counts = [int(line) for line in done.stdout.split()[-len(paths):]]
    return [(count, torch.load(Path(f"{path}.out"))) for path, count in zip(paths, counts)]


def pruned_once(weights: Path, data: str, speed_up: float = 1.5, imgsz: int = 64):
    """``run(method)``: ``weights`` pruned to ``speed_up`` at ``imgsz`` with each method, computed once per method
    (methods that measure on data get ``data``, one calibration batch)."""
    from yoloslim.prune.api import prune_model
    from yoloslim.prune.methods import METHODS

    results = {}

    def run(method: str):
        if method not in results:
            needs = METHODS[method].needs_data
            results[method] = prune_model(weights, method=method, speed_up=speed_up, imgsz=imgsz,
                                          data=data if needs else None, calib_batches=1, log=lambda _: None)
        return results[method]

    return run


def distill_one_epoch(student: str, teacher: str, data: str, folder: Path, imgsz: int = 64) -> dict[str, str]:
    """``yoloslim distill`` with L2 logits and CWD features for one epoch; the first results.csv row (the run is
    ``folder/kd``)."""
    import csv

    from yoloslim.cli import main

    code = main(["distill", "--model", student, "--teacher", teacher, "--data", data, "--logit", "l2", "--feature",
                 "cwd", "--epochs", "1", "--imgsz", str(imgsz), "--batch", "4", "--workers", "0", "--no-plots",
                 "--project", str(folder), "--name", "kd"])
    assert code == 0
    with open(folder / "kd" / "results.csv") as f:
        return next(csv.DictReader(f))
