"""The ``slukd`` command: a thin layer over the library functions of the same names.

Public face: ``main`` (main); ``python -m pipeline.cli`` runs it.
"""
