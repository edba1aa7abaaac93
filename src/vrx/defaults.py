"""Defaults that both the library and the CLI's help texts use, in a module that imports nothing.

The CLI builds its parser without importing torch; its help reads these values from here.
"""

#: Relations drawn per class panel of an explanation figure.
DEFAULT_MAX_EDGES = 6
#: Sample test images the HTML report explains.
DEFAULT_SAMPLES = 6
