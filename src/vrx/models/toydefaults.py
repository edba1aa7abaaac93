"""Defaults of toy CNN training, importable without torch (the CLI shows them in its help)."""

DEFAULT_EPOCHS = 12
DEFAULT_BATCH_SIZE = 32
#: The torch intra-op threads to train with. Training changes no process-wide setting itself: the
#: caller scopes it, ``with vrx.runtime.threads(torch_threads=DEFAULT_THREADS): train_toy(...)``.
#: One thread: on two shared cores, two OpenMP threads measured 3x slower than one (129 s vs 44 s
#: for the demo run) whenever another process held a core; idle, two are 1.5x faster.
DEFAULT_THREADS = 1
