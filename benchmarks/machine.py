"""The machine a benchmark runs on: its facts (CPU, threads, versions), the load other processes
put on it while the benchmark runs, and whether the Hub answers."""

from __future__ import annotations

import os
import platform
import socket
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def machine_facts(device: str) -> dict[str, str]:
    import accelerate
    import datasets
    import mlflow
    import psutil
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") if Path("/proc/cpuinfo").exists() else open(os.devnull) as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    facts = {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() and device != "cpu" else "none used",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "mlflow": mlflow.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
    }
    return facts


class LoadMonitor:
    """Samples, every ``interval_s`` while the benchmark runs, the CPU that processes outside it use
    (in cores) and the 1-minute load average, and remembers the busiest of those processes."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self.load: list[float] = []
        self.other_cores: list[float] = []
        self.times: list[float] = []  # when each other_cores sample was taken (time.monotonic)
        self.busiest: dict[str, float] = {}  # command -> highest CPU % seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="benchmark-load", daemon=True)

    def _loop(self) -> None:
        import psutil

        tracked: dict[int, psutil.Process] = {}
        first = True
        while True:
            me = psutil.Process()
            mine = {me.pid, *(c.pid for c in me.children(recursive=True))}
            total = 0.0
            for proc in psutil.process_iter(["pid", "name", "cmdline"]):
                if proc.pid in mine:
                    continue
                proc = tracked.setdefault(proc.pid, proc)
                try:
                    percent = proc.cpu_percent(None)  # since the previous sample (0 the first time)
                    if percent >= 20:
                        command = " ".join(proc.cmdline() or [proc.name()])[:100]
                        self.busiest[command] = max(self.busiest.get(command, 0.0), percent)
                except psutil.Error:
                    continue
                total += percent
            if not first:
                self.other_cores.append(total / 100)
                self.times.append(time.monotonic())
                self.load.append(os.getloadavg()[0])
            first = False
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> "LoadMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def cores_between(self, start: float, end: float) -> float | None:
        """Mean cores used by other processes between two time.monotonic() readings."""
        inside = [cores for t, cores in zip(self.times, self.other_cores) if start <= t <= end + self.interval_s]
        return float(np.mean(inside)) if inside else None

    @property
    def busy(self) -> bool:
        return bool(self.other_cores) and float(np.mean(self.other_cores)) > 0.2

    def summary(self) -> str:
        if not self.other_cores:
            return "not sampled"
        top = sorted(self.busiest.items(), key=lambda kv: -kv[1])[:4]
        return (
            f"processes outside the benchmark used {np.mean(self.other_cores):.2f} cores on average (max "
            f"{max(self.other_cores):.2f}) of {os.cpu_count()}; 1-min load average mean {np.mean(self.load):.1f}, max "
            f"{max(self.load):.1f} ({len(self.load)} samples, every {self.interval_s:.0f} s). Busiest others: "
            f"{'; '.join(f'`{cmd}` up to {pct:.0f}%' for cmd, pct in top) or 'none above 20%'}"
        )


# ----------------------------------------------------------------------------- data


def imdb_reachable() -> tuple[bool, str]:
    """Whether the Hub's imdb can be loaded: a cached copy in offline mode, else a quick connect."""
    offline = any(
        os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )
    if not offline:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=3).close()
        except OSError as exc:
            return False, f"huggingface.co not reachable ({exc.__class__.__name__}: {exc})"
    return True, "offline mode: a cached copy is needed" if offline else "reachable"
