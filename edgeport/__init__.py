"""edgeport: take a trained model to the edge and prove it still works there.

The command line (edgeport/cli/) is the top floor: it may use every room below it, and no
room below imports it.

Imports: edge, converters, converters.routes, converters.quantize, converters.edgetpu, converters.validation, converters.toolenv
"""

from edge.version import version as _version

__version__ = _version()
