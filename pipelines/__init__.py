"""Dagster wiring, the `cogs` CLI, reports and the demo.

Every process of the product (the `cogs` command, the Dagster code location and its run workers) imports
this package before polars loads, so this is where polars' allocator is configured: by default its
jemalloc hands freed pages back to the kernel within seconds, and every allocation batch then faults its
memory in again (a fifth of the allocation's CPU time spent in the kernel). Freed pages are kept for reuse
instead: the process stays at its peak, which the batch size bounds. OpenBLAS (numpy's, loaded with
pyarrow) gets one thread: the product multiplies no matrices, and one idle OpenBLAS thread per core took
2 % of the allocation's CPU time from polars. An operator's own settings win.
"""

import os
import sys

if "polars" not in sys.modules:  # jemalloc reads it once, when polars loads
    os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:-1,muzzy_decay_ms:-1")
if "numpy" not in sys.modules:  # read once, when numpy loads OpenBLAS
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
