"""Full-integer quantization: calibration images or --data arrays (calibration.py; the --data
file's reading is shared with validation), bias correction and TFLite's calibrator
(tflite_int8.py), AdaRound-style weight rounding of PyTorch models (adaround.py).

May import: edge/ and the converters root only. Routes call into this room, never the
other way round.

Imports: edge, converters
"""
