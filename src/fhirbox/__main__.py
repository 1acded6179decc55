"""``python -m fhirbox``: the same as the ``fhirbox`` command."""

from fhirbox.cli import main

main(prog_name="fhirbox")
