"""The Edge TPU: compile.py (the registered tflite-int8 -> edgetpu conversion),
backends.py (the compiler run locally, or in docker/podman from the Dockerfile here),
log.py (the compiler's report), ops.py (Coral's op table with the compiler's known
departures), analyzer.py (predicts the compiler's mapping; reads compiled models).

May import: edge/ and the converters root only.

Imports: edge, converters
"""
