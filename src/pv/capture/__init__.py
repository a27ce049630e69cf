"""Capture: run a model in an engine and hand each stage, as it is produced, to a tap.

The rooms: ``store`` (APRT files, capture directories, generations; numpy
only), ``model`` (families, configs, loading), the runners ``engine`` (pv's
own forward), ``oracle`` (transformers) and ``llamacpp``, and ``importer``
(``pv import``). Here: the tap protocol (``tap``), the disk tap (``disktap``),
what to capture (``plan``), the fault catalogue (``faults``), the runner
registry (``runners``), token ids (``tokens``), device and dtype
(``runtime``), and the orchestration of a capture (``trace``) and of a
generation (``generate``). The library's entry point is ``pv.trace``.
"""
