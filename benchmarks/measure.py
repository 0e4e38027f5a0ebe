"""Instruments the benchmark puts around both sides alike: wall clocks, time inside MLflow calls,
CPU time of MLflow's background threads, and peak memory.

The MLflow clock patches the public functions of the ``mlflow`` module (``log_metrics``,
``log_params``, ``log_artifact(s)``, ``start_run``, ``pyfunc.log_model``, ...) for the duration
of a block and sums the wall time of the outermost calls. Our tracker and Hugging Face's
``MLflowCallback`` both call these functions through the module, so one instrument measures
both sides the same way. Asynchronous logging returns at once and does its work on background
threads (``MLflowAsyncLogging*``, ``MLflowBatchLoggingWorkerPool*``, ``SystemMetricsMonitor``);
their CPU time is read separately, because on a 2-core machine it competes with training.

    python -c "from benchmarks.measure import MlflowClock"
"""

from __future__ import annotations

import contextlib
import functools
import resource
import threading
import time
from dataclasses import dataclass, field

import psutil

# Functions whose wall time counts as "time in MLflow": everything a training run calls.
_FLUENT = (
    "start_run",
    "end_run",
    "set_experiment",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "set_tag",
    "set_tags",
    "log_artifact",
    "log_artifacts",
    "log_text",
    "log_dict",
    "log_figure",
    "log_table",
    "log_input",
    "log_inputs",
    "flush_async_logging",
    "register_model",
    "get_run",
)
_SUBMODULE = (("pyfunc", "log_model"), ("data", "from_pandas"), ("artifacts", "download_artifacts"))
_THREAD_PREFIXES = ("MLflow", "SystemMetricsMonitor")


@dataclass
class MlflowClock:
    """Sums wall seconds spent inside MLflow's public functions (outermost calls only)."""

    seconds: float = 0.0
    calls: int = 0
    by_function: dict[str, float] = field(default_factory=dict)
    _depth: int = 0

    @contextlib.contextmanager
    def installed(self):
        import mlflow

        originals = []
        for name in _FLUENT:
            if hasattr(mlflow, name):
                originals.append((mlflow, name, getattr(mlflow, name)))
        for module_name, name in _SUBMODULE:
            module = getattr(mlflow, module_name, None)
            if module is not None and hasattr(module, name):
                originals.append((module, name, getattr(module, name)))
        for owner, name, original in originals:
            setattr(owner, name, self._wrap(name, original))
        try:
            yield self
        finally:
            for owner, name, original in originals:
                setattr(owner, name, original)

    def _wrap(self, name: str, original):
        @functools.wraps(original)
        def timed(*args, **kwargs):
            if self._depth:
                return original(*args, **kwargs)
            self._depth += 1
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent = time.perf_counter() - started
                self._depth -= 1
                self.seconds += spent
                self.calls += 1
                self.by_function[name] = self.by_function.get(name, 0.0) + spent

        return timed

    def top(self, n: int = 4) -> str:
        items = sorted(self.by_function.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{name} {seconds:.2f}s" for name, seconds in items)


def _mlflow_threads() -> dict[int, float]:
    """CPU seconds so far of each live MLflow background thread, by native thread id."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    return {
        t.id: t.user_time + t.system_time
        for t in psutil.Process().threads()
        if names.get(t.id, "").startswith(_THREAD_PREFIXES)
    }


def mlflow_thread_cpu_seconds() -> float:
    """CPU seconds used so far by MLflow's live background threads in this process."""
    return sum(_mlflow_threads().values())


class PeakRss:
    """While active, samples every ``interval_s``: this process's resident memory (``peak_mb``)
    and the CPU time of MLflow's background threads (``mlflow_thread_cpu_s``). Sampling keeps
    the CPU of threads that end inside the block (e.g. async logging shut down by ``end_run``)."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self, process: psutil.Process) -> None:
        self.peak_bytes = max(self.peak_bytes, process.memory_info().rss)
        self._last.update(_mlflow_threads())

    def __enter__(self) -> "PeakRss":
        process = psutil.Process()
        self.peak_bytes = process.memory_info().rss
        self._start = _mlflow_threads()

        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self._sample(process)

        self._thread = threading.Thread(target=loop, name="benchmark-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample(psutil.Process())

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20

    @property
    def mlflow_thread_cpu_s(self) -> float:
        return sum(cpu - self._start.get(tid, 0.0) for tid, cpu in self._last.items())


def max_rss_mb() -> float:
    """The process's lifetime peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_gpu_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def gpu_peak_mb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
