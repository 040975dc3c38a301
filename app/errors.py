"""What the demo tells a user beyond its panels: the research notice, the DICOM burned-in-text warning, and
the error type of bad input that is not an image-reading problem."""

from __future__ import annotations



NOTICE = "Research demo — not for clinical use. Outputs are machine-generated and may be wrong."
BURNED_IN_WARNING = (
    "DICOM: identifying header tags are never read, shown or stored, but text burned into the pixels "
    "(names, dates, hospital marks) is NOT removed and stays visible in the image."
)

class AppInputError(ValueError):
    """Bad input to the demo that is not an image-reading problem (no file, unknown study, empty text)."""
