"""The ``cloud-bridge`` command line."""
