"""The NaN/inf check of checkpoint weights, now or in the background.

A damaged checkpoint (NaN or inf in a tensor) is refused with the tensor's name before anything is produced from
it. Reading every weight is what a load costs when the weights stay the file's map: the check is the only thing
that touches their pages before the first forward. So a load that keeps the map (`WeightsCheck`) reads them in a
background thread while the caller encodes text and VCUs, and the model waits for it (`weights_checked`) before
its first step: the load returns as soon as the model is built, and the check costs one read of the file, off
the critical path. Tensors a load converts or moves are checked at once, from the pages the conversion just read.
"""

import atexit
import threading
import time
import weakref
from collections import deque

import torch
from torch import Tensor

from ..errors import VaceError
from ..ggml import QuantizedWeight, scales_finite

FINITE_CHUNK = 2**22  # elements of an overflowing sum checked again at once (a float32 temporary of 16 MiB)
# The smallest positive non-finite fp8 byte: e4m3fn's NaN is 0x7F (no inf), e5m2's inf / NaN 0x7C..0x7F (the
# exponent all ones). As int8 the positive ones are the largest values, as uint8 their negatives (| 0x80).
FP8_NONFINITE = {torch.float8_e4m3fn: 0x7F, torch.float8_e5m2: 0x7C}


def check_finite(key: str, value: Tensor | QuantizedWeight) -> None:
    """Refuses a tensor holding NaN or inf, reading it once and never copying it whole (mapped tensors stay
    file pages). A NaN or inf makes any float sum non-finite, so a finite sum in the tensor's own dtype (float
    accumulation) clears it at memory speed; only a sum that overflowed is checked again exactly, in float32
    chunks. fp8 has no sum kernel: two byte maxima find its non-finite bit patterns (see FP8_NONFINITE). GGUF
    blocks: their float16 scales (the integers cannot be NaN); dequantized only when a scale is not finite."""
    if isinstance(value, QuantizedWeight):
        if not scales_finite(value.blocks, value.qtype):
            check_finite(key, value.dequantize())  # raises, naming the tensor
        return
    if not value.is_floating_point() or not value.numel():
        return
    flat = value.reshape(-1)  # a view: mapped tensors are contiguous
    if value.dtype in FP8_NONFINITE:
        low = FP8_NONFINITE[value.dtype]
        bad = flat.view(torch.int8).amax() >= low or flat.view(torch.uint8).amax() >= 0x80 | low
    else:
        bad = not torch.isfinite(torch.sum(flat)) and not all(
            torch.isfinite(torch.sum(chunk, dtype=torch.float32)) for chunk in flat.split(FINITE_CHUNK))
    if bad:
        raise VaceError(f"the checkpoint's tensor {key} holds NaN or infinite values: the file is damaged (or was "
                        "saved from a diverged training run). Download it again.")


class WeightsCheck:
    """check_finite over (key, tensor) pairs in a daemon thread, started at once; `wait()` blocks until it is done
    and raises its VaceError (every time: a refused model stays refused). The thread holds the tensors (views of
    the map, never copies) only until it has read them. `count`: how many tensors it checks; `seconds`: how long
    the check ran (None until done)."""

    def __init__(self, tensors: list[tuple[str, Tensor]]):
        self.count = len(tensors)
        self.error: VaceError | None = None
        self.seconds: float | None = None
        self._stop = threading.Event()
        RUNNING.add(self)
        self._thread = threading.Thread(target=self._run, args=(deque(tensors),), name="vace-weights-check",
                                        daemon=True)
        self._thread.start()

    def _run(self, tensors: deque) -> None:
        start = time.perf_counter()
        try:
            while tensors and not self._stop.is_set():
                check_finite(*tensors.popleft())
            if tensors:
                self.error = VaceError("the checkpoint's NaN/inf check was stopped: the program is exiting")
        except VaceError as e:
            self.error = e
        except Exception as e:  # noqa: BLE001 - reported by wait(), in the caller's thread
            self.error = VaceError(f"the checkpoint's NaN/inf check failed ({type(e).__name__}: {e})")
        finally:
            tensors.clear()
            self.seconds = time.perf_counter() - start

    def wait(self) -> None:
        self._thread.join()
        if self.error is not None:
            raise VaceError(str(self.error))


RUNNING: "weakref.WeakSet[WeightsCheck]" = weakref.WeakSet()  # a running check's thread holds it


@atexit.register
def stop_checks() -> None:
    """Stops every running check after its current tensor and waits for it: a daemon thread still inside a torch
    op when the interpreter exits aborts the process ("terminate called without an active exception")."""
    checks = list(RUNNING)
    for check in checks:
        check._stop.set()
    for check in checks:
        check._thread.join()
