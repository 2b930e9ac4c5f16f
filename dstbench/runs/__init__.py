"""Run folders: atomic writes, sealed files and their manifest, reading, reuse and inspection.

Serves ``train`` (writing), ``grid`` (reuse) and ``analysis`` (reading); imports none of them.
"""
