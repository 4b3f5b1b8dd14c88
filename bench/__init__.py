"""Benchmarks of the template's generated service, run from the template's root against a baked copy.

``python -m bench.layer_bench`` (the channel layer against its peers) and ``python -m bench.ws_load`` (the
whole service end to end); results go to ``docs/benchmarks/``. See ``bench/project.py`` for the bake and
the peers' virtualenv.
"""
