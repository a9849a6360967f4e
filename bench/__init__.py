"""Load benchmarks: sidecache against the upstream alone and against nginx ``proxy_cache``.

``python -m bench.run`` measures everything (see its docstring for what and how fairly);
``python -m bench.profile`` records where sidecache spends its time under one scenario.
"""
