"""gradus's domain library: problems, rollouts, verification, pass rates, curricula.

Importable and testable without Dagster; the `assets` package is the thin Dagster layer on top.
"""

import os

import pyarrow as pa

# gradus streams a million problems a batch at a time, freeing each batch as the next is read.
# Arrow's default mimalloc pool keeps freed pages mapped: streaming a 1M pool into curriculum
# stages left 390 MB resident that the system allocator gives back (measured with
# bench/label_scale.py). An explicit ARROW_DEFAULT_MEMORY_POOL still wins.
if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
    pa.set_memory_pool(pa.system_memory_pool())
