"""The device side, what a Raspberry Pi installs: the TFLite interpreter factory (backend,
Edge TPU delegate, device strings), a flatbuffer reader, preprocessing, labels,
classification and latency statistics.

May import: numpy, Pillow and one TFLite interpreter (imported lazily). Never converters/,
edgeport/ or a framework (TensorFlow only as the named last-resort interpreter backend).

Imports: (no project room)
"""
