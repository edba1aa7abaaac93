"""Process-wide runtime settings, opt-in, for the edges of a program (the CLI, benchmarks, tests).

torch's intra-op thread count and the BLAS thread pools belong to the whole process, so library
code does not change them; a command that knows what it runs scopes them with :func:`threads`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def threads(torch_threads: int | None = None, blas_threads: int | None = None) -> Iterator[None]:
    """Run the block with ``torch_threads`` intra-op threads and ``blas_threads`` BLAS threads.

    None leaves a setting as it is. Both are restored when the block ends.
    """
    with contextlib.ExitStack() as stack:
        if blas_threads is not None:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=int(blas_threads), user_api="blas"))
        if torch_threads is not None:
            import torch

            old = torch.get_num_threads()
            if int(torch_threads) != old:
                torch.set_num_threads(int(torch_threads))
                stack.callback(torch.set_num_threads, old)
        yield


#: Discovery and graph building (both extract patches): the matrix products are small (tens of
#: rows) and the per-patch resizing ops tiny, so extra threads spend more time waking than
#: computing: a multi-threaded BLAS measured up to 60x slower on a loaded machine, and patch
#: extraction at 2 torch threads 114 vs 679 ms per toyworld image under load (bench_patches.py).
DISCOVERY_THREADS: dict[str, int] = {"torch_threads": 1, "blas_threads": 1}
#: GRN ops are tiny (a few thousand multiply-adds per graph): one torch thread is fastest; more
#: threads on a busy 2-core machine made training steps ~50x slower in measurement (docs/grn.md).
GRN_THREADS: dict[str, int] = {"torch_threads": 1}
