"""Proof that a converted model still works: Polygraphy's split of concerns.

    runners/      one runner per runtime (load, describe I/O, infer)
    data.py       data sources: seeded values, or images through a preprocessing spec
    comparator.py per-output tolerances, statistics, top-k agreement
    validate.py   runs source and converted models on the same inputs
    report.py     table, JSON and JUnit reports
    check.py, evaluate.py, inspect.py   the libraries behind `check`, `eval`, `inspect`

May import: edge/, the converters root, routes' loaders (tf_loading, torch_loading),
quantize/ and edgetpu/ (the analyzer). Never edgeport/.

Imports: edge, converters, converters.routes, converters.quantize, converters.edgetpu
"""
